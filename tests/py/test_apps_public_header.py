"""Programs in apps/ use only the public header (issue #20: "apps/ includes only the public header").

Every #include line of every file under apps/ is checked: a quoted include must name a file of
apps/ (relative to the including file) or include/llama3c.h; an include in angle brackets must not
name a header of src/ (the build passes -Isrc to every program, so the compiler would not notice).
System headers are fine. The library's internals stay free to change behind llama3c.h.
"""
import os
import re

from conftest import REPO

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
# files that may still include internal headers, with the reason; empty: none may
KNOWN_EXCEPTIONS = {}


def app_files():
    for root, _, files in os.walk(os.path.join(REPO, "apps")):
        for f in sorted(files):
            if f.endswith((".c", ".h")):
                yield os.path.join(root, f)


def bad_includes(path):
    bad = []
    text = open(path, encoding="utf-8").read()
    for m in INCLUDE.finditer(text):
        kind, name = m.group(1), m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        here = os.path.normpath(os.path.join(os.path.dirname(path), name))
        in_apps = here.startswith(os.path.join(REPO, "apps") + os.sep) and os.path.isfile(here)
        public = os.path.isfile(os.path.join(REPO, "include", name))
        internal = os.path.isfile(os.path.join(REPO, "src", name))
        if kind == '"' and not (in_apps or public):
            bad.append(f"{os.path.relpath(path, REPO)}:{line}: #include \"{name}\"")
        elif kind == "<" and internal and not public:
            bad.append(f"{os.path.relpath(path, REPO)}:{line}: #include <{name}>")
    return bad


def test_apps_include_only_the_public_header():
    files = list(app_files())
    assert len(files) > 20, files  # the walk found the programs
    bad = []
    for f in files:
        if os.path.relpath(f, REPO) not in KNOWN_EXCEPTIONS:
            bad += bad_includes(f)
    assert not bad, "apps/ must include only include/llama3c.h and apps/ headers:\n" + "\n".join(bad)


def test_the_check_catches_an_internal_include(tmp_path):
    """The check itself can fail: an internal header, quoted or bracketed, is reported."""
    d = os.path.join(REPO, "apps", "cli")
    probe = os.path.join(d, f".probe_{os.getpid()}.c")
    try:
        with open(probe, "w") as f:
            f.write('#include "cli.h"\n#include "llama3c.h"\n#include "train/data.h"\n'
                    "#include <stdio.h>\n#  include <model/model.h>\n")
        bad = bad_includes(probe)
    finally:
        os.unlink(probe)
    assert len(bad) == 2 and ":3:" in bad[0] and "train/data.h" in bad[0] and "model/model.h" in bad[1], bad
