#!/bin/sh
# Runs each C unit-test binary given as an argument; prints a closing "N passed, N failed" line
# and exits non-zero when any binary fails. L3C_TEST_WRAPPER, when set, is a command each binary
# runs under (make test-arm64: "qemu-aarch64 -cpu max").
pass=0; fail=0
for t in "$@"; do
    if $L3C_TEST_WRAPPER "$t"; then pass=$((pass+1)); else echo "FAILED: $t"; fail=$((fail+1)); fi
done
echo "unit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
