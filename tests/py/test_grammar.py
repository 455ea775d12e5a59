"""Constrained generation (src/grammar/, docs/GRAMMAR.md) through `llama3c run`, checked by
independent referees:

- JSON Schema: every output of `run --json-schema` parses (json) and validates (python
  `jsonschema`) for SCHEMAS (>= 50: nested objects, arrays, enums, $ref / $defs, recursion,
  formats, integer bounds), greedy and sampled, on stories260K (all) and SmolLM2 (a subset, slow).
- GBNF: text generated under llama.cpp's own grammars (tests/py/data/grammars/, from its
  grammars/ folder) is accepted token by token by llama.cpp's grammar sampler
  (llama-cpp-python's llama_sampler_init_grammar), and end-of-generation is allowed there where
  llama3c said the grammar was complete. A wrong string is rejected by the same referee (so the
  check has teeth).
- Bad input: unknown schema keyword, recursion without a base case, undefined GBNF rule, syntax
  error: a clear message and a non-zero exit.
"""
import ctypes
import json
import math
import os

import pytest
from conftest import HERE, THREADS, llama_cpp_or_skip, run_cli

jsonschema = pytest.importorskip("jsonschema")

GRAMMARS = os.path.join(HERE, "data", "grammars")
S = {"type": "string", "maxLength": 10}  # a bounded string: outputs of tiny models terminate

SCHEMAS = [
    {"type": "boolean"},
    {"type": "null"},
    {"type": "integer"},
    {"type": "number"},
    {"type": "string", "maxLength": 8},
    {"type": "string", "minLength": 3, "maxLength": 5},
    {"type": "integer", "minimum": 0, "maximum": 9},
    {"type": "integer", "minimum": -50, "maximum": 50},
    {"type": "integer", "minimum": 100, "maximum": 999},
    {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 1000},
    {"type": "integer", "minimum": 7},
    {"type": "integer", "maximum": -3},
    {"type": "number", "minimum": 0},
    {"enum": ["red", "green", "blue"]},
    {"enum": [1, 2.5, "x", None, True]},
    {"const": "fixed"},
    {"const": {"a": [1, 2]}},
    {"type": "string", "format": "date"},
    {"type": "string", "format": "time"},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "uuid"},
    {"type": ["integer", "null"]},
    {"type": ["string", "boolean"], "maxLength": 4},
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "maxItems": 4},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 3},
    {"type": "array", "items": S, "minItems": 1, "maxItems": 2},
    {"type": "array", "prefixItems": [{"type": "integer", "maximum": 9, "minimum": 0}, S, {"type": "boolean"}],
     "items": False},
    {"type": "array", "prefixItems": [{"const": "head"}], "items": {"type": "null"}, "maxItems": 3},
    {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 0},
    {"type": "object", "properties": {"name": S}, "required": ["name"]},
    {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 5}, "b": S}},
    {"type": "object", "properties": {"x": {"type": "boolean"}, "y": {"type": "null"}}, "required": ["y"]},
    {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"},
                                      "when": {"type": "string", "format": "date-time"}},
     "required": ["id", "when"]},
    {"type": "object", "properties": {"p": {"type": "object", "properties": {"q": {"type": "object", "properties": {
        "r": {"type": "integer", "minimum": 1, "maximum": 3}}, "required": ["r"]}}, "required": ["q"]}},
     "required": ["p"]},
    {"type": "object", "properties": {"items": {"type": "array", "maxItems": 3, "items": {
        "type": "object", "properties": {"sku": S, "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["sku", "qty"]}}}, "required": ["items"]},
    {"type": "object", "properties": {"k": S}, "required": ["k"], "additionalProperties": False},
    {"type": "object", "properties": {"k": {"type": "boolean"}}, "required": ["k"],
     "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9}},
    {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 9},
                                      "idx": {"type": "boolean"}},
     "additionalProperties": {"type": "null"}},
    {"type": "object", "additionalProperties": {"type": "boolean"}},
    {"type": "object", "properties": {"color": {"enum": ["red", "blue"]}, "size": {"enum": [1, 2, 3]}},
     "required": ["color", "size"]},
    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "boolean"}]},
    {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]},
    {"oneOf": [
        {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "integer", "minimum": 1,
                                                                           "maximum": 9}},
         "required": ["kind", "r"]},
        {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "integer", "minimum": 1,
                                                                              "maximum": 9}},
         "required": ["kind", "side"]}]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]},
               {"type": "object", "properties": {"b": {"type": "null"}}, "required": ["b"]}]},
    {"allOf": [{"$ref": "#/$defs/flag"}], "$defs": {"flag": {"type": "boolean"}}},
    {"$ref": "#/$defs/point", "$defs": {"point": {"type": "object", "properties": {
        "x": {"type": "integer", "minimum": -9, "maximum": 9}, "y": {"type": "integer", "minimum": -9, "maximum": 9}},
        "required": ["x", "y"]}}},
    {"type": "object", "properties": {"from": {"$ref": "#/definitions/pt"}, "to": {"$ref": "#/definitions/pt"}},
     "required": ["from", "to"],
     "definitions": {"pt": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
                            "minItems": 2, "maxItems": 2}}},
    {"$ref": "#/$defs/tree", "$defs": {"tree": {"type": "object", "properties": {
        "v": {"type": "integer", "minimum": 0, "maximum": 9},
        "kids": {"type": "array", "maxItems": 2, "items": {"$ref": "#/$defs/tree"}}}, "required": ["v"]}}},
    {"$ref": "#/$defs/list", "$defs": {"list": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {
        "head": {"type": "boolean"}, "tail": {"$ref": "#/$defs/list"}}, "required": ["head", "tail"]}]}}},
    {"type": "object", "title": "Person", "description": "ignored annotations", "$schema":
        "https://json-schema.org/draft/2020-12/schema", "properties": {"name": {**S, "default": "x",
                                                                                 "examples": ["y"]}},
     "required": ["name"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["x", "y", "z"]},
                                               "minItems": 1, "maxItems": 3},
                                      "score": {"type": "number", "minimum": 0}},
     "required": ["tags", "score"]},
    {"type": "object", "properties": {"d": {"type": "string", "format": "date"},
                                      "t": {"type": "string", "format": "time"}},
     "required": ["d"]},
    {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
                                "maxItems": 2}, "maxItems": 2},
    {"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 6},
                                      "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                      "email": {"type": ["string", "null"], "maxLength": 10},
                                      "admin": {"type": "boolean"}},
     "required": ["name", "age", "admin"]},
    {},
    {"type": "object"},
]
assert len(SCHEMAS) >= 50
# Extra keys (additionalProperties) and free JSON values are unbounded: a random tiny model need not
# close them within a token budget, so they run on SmolLM2 only; 37, 38 and 55 are left out of
# generation (SmolLM2 too invents keys without end: '"age_min_min_min": 25, ...'); their grammars
# are checked string by string in tests/unit/test_grammar.c.
UNBOUNDED = [36, 37, 38, 54, 55]
TINY = [k for k in range(len(SCHEMAS)) if k not in UNBOUNDED]
# SmolLM2: nested objects, arrays of objects, enums, oneOf, $ref, recursion, extra keys, any value
SMOL_SUBSET = [29, 34, 43, 45, 48, 36, 54]
assert len(TINY) + len([k for k in SMOL_SUBSET if k in UNBOUNDED]) >= 50


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _gen_schema(model, schema, tmp_path, temp, seed, n=400, prompt="Once upon a time"):
    path = _write(tmp_path, f"schema_{seed}.json", json.dumps(schema))
    p = run_cli("run", "-m", model, "-p", prompt, "--json-schema", path, "-n", n, "--temp", temp,
                "--seed", seed, "-t", THREADS, "--no-timings")
    assert "stopped before the grammar was complete" not in p.stderr, \
        f"schema {schema}: output did not finish in {n} tokens: {p.stdout!r}"
    return p.stdout


def _check(schema, out):
    try:
        value = json.loads(out)
    except ValueError as e:
        pytest.fail(f"schema {json.dumps(schema)}: output is not JSON ({e}): {out!r}", pytrace=False)
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as e:
        pytest.fail(f"schema {json.dumps(schema)}: output {out!r} does not validate: {e.message}", pytrace=False)


@pytest.mark.parametrize("k", TINY)
def test_schema_outputs_validate_tiny(llama3c, stories_gguf, tmp_path, k):
    model = stories_gguf("f32")
    for temp, seed in ((0, 1), (1.0, 100 + k), (1.5, 200 + k)):
        _check(SCHEMAS[k], _gen_schema(model, SCHEMAS[k], tmp_path, temp, seed))


@pytest.mark.slow
@pytest.mark.parametrize("k", SMOL_SUBSET)
def test_schema_outputs_validate_smollm2(llama3c, smollm2_path, tmp_path, k):
    for temp, seed in ((0, 1), (0.9, 7)):
        out = _gen_schema(smollm2_path, SCHEMAS[k], tmp_path, temp, seed, n=160,
                          prompt="Write one JSON value for a test record.")
        _check(SCHEMAS[k], out)


def test_json_flag_gives_an_object(llama3c, stories_gguf):
    p = run_cli("run", "-m", stories_gguf("f32"), "-p", "Hi", "--json", "-n", 300, "--temp", 1.0, "--seed", 5,
                "--no-timings")
    if "stopped before the grammar was complete" not in p.stderr:
        assert isinstance(json.loads(p.stdout), dict)
    else:  # a free-form object may run long on a random model: a prefix of an object then
        assert p.stdout.lstrip().startswith("{")


# ---------------------------------------------------------------- GBNF against llama.cpp's grammar code

class Referee:
    """llama.cpp's grammar sampler on a vocabulary: feeds text token by token, checking each."""

    def __init__(self, model_path):
        self.lc = llama_cpp_or_skip()
        self.llm = self.lc.Llama(model_path, vocab_only=True, verbose=False)
        self.vocab = self.llm._model.vocab
        self.eos = self.llm.token_eos()

    def _allowed(self, smpl, tok):
        arr = (self.lc.llama_token_data * 1)()
        arr[0].id, arr[0].logit, arr[0].p = tok, 0.0, 0.0
        cur = self.lc.llama_token_data_array(data=arr, size=1, selected=-1, sorted=False)
        self.lc.llama_sampler_apply(smpl, ctypes.byref(cur))
        return arr[0].logit != -math.inf

    def check(self, grammar, text):
        """(every token accepted, end-of-generation allowed afterwards)."""
        smpl = self.lc.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
        assert smpl, "llama.cpp did not parse the grammar"
        try:
            for t in self.llm.tokenize(text.encode(), add_bos=False, special=False):
                if not self._allowed(smpl, t):
                    return False, False
                self.lc.llama_sampler_accept(smpl, t)
            return True, self._allowed(smpl, self.eos)
        finally:
            self.lc.llama_sampler_free(smpl)


@pytest.fixture(scope="module")
def referee(smollm2_path):
    return Referee(smollm2_path)


GBNF_CASES = [("json", "A JSON object: "), ("arithmetic", "Sum: "), ("list", "Shopping list:\n"),
              ("c", "int main"), ("chess", "Game: ")]


def test_referee_has_teeth(referee):
    g = open(os.path.join(GRAMMARS, "arithmetic.gbnf")).read()
    assert referee.check(g, "a+b=c\n") == (True, True)
    assert referee.check(g, "a+=c\n")[0] is False
    assert referee.check(g, "a+b") == (True, False)


@pytest.mark.parametrize("name,prompt", GBNF_CASES)
def test_gbnf_outputs_accepted_by_llama_cpp(llama3c, stories_gguf, referee, name, prompt):
    path = os.path.join(GRAMMARS, f"{name}.gbnf")
    grammar = open(path).read()
    for temp, seed in ((0, 1), (1.0, 11), (1.0, 12), (1.3, 13)):
        p = run_cli("run", "-m", stories_gguf("f32"), "-p", prompt, "--grammar", path, "-n", 120, "--temp", temp,
                    "--seed", seed, "--no-timings")
        done = "stopped before the grammar was complete" not in p.stderr
        ok, end_ok = referee.check(grammar, p.stdout)
        assert ok, f"{name} (temp {temp}): llama.cpp rejects llama3c's output {p.stdout!r}"
        if done:
            assert end_ok, f"{name}: llama3c ended at a point llama.cpp does not accept as complete: {p.stdout!r}"


@pytest.mark.slow
@pytest.mark.parametrize("name,prompt", GBNF_CASES)
def test_gbnf_outputs_accepted_by_llama_cpp_smollm2(llama3c, smollm2_path, referee, name, prompt):
    path = os.path.join(GRAMMARS, f"{name}.gbnf")
    p = run_cli("run", "-m", smollm2_path, "-p", prompt, "--grammar", path, "-n", 60, "--temp", 0.7,
                "--seed", 3, "--no-timings")
    ok, end_ok = referee.check(open(path).read(), p.stdout)
    assert ok, f"{name}: llama.cpp rejects llama3c's output {p.stdout!r}"
    if "stopped before the grammar was complete" not in p.stderr:
        assert end_ok


# ---------------------------------------------------------------- bad input

BAD_SCHEMAS = [
    ({"type": "object", "properties": {"a": {"type": "string", "foo": 1}}}, "keyword 'foo'"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "keyword 'uniqueItems'"),
    ({"type": "string", "pattern": "^[a-z]+$"}, "'pattern'"),
    ({"type": "string", "format": "email"}, "format 'email'"),
    ({"$ref": "#/$defs/loop", "$defs": {"loop": {"type": "object", "properties": {"next": {"$ref": "#/$defs/loop"}},
                                                 "required": ["next"]}}}, "without a base case"),
    ({"$ref": "https://example.com/schema.json"}, "only references inside the schema"),
    ({"type": "integer", "multipleOf": 3}, "keyword 'multipleOf'"),
]


@pytest.mark.parametrize("schema,msg", BAD_SCHEMAS)
def test_bad_schema_refused(llama3c, stories_gguf, tmp_path, schema, msg):
    path = _write(tmp_path, "bad.json", json.dumps(schema))
    p = run_cli("run", "-m", stories_gguf("f32"), "-p", "x", "--json-schema", path, "-n", 5, check=False)
    assert p.returncode != 0 and msg in p.stderr, p.stderr
    assert p.stdout == ""


@pytest.mark.parametrize("gbnf,msg", [
    ("root ::= item+\nitem ::= \"a\" itme\n", "line 2 column 14: undefined rule 'itme'"),
    ("root ::= \"a\" (\"b\" | \"c\"\n", "expecting ')'"),
    ("root ::= expr\nexpr ::= expr \"+\" \"1\" | \"1\"\n", "rule 'expr' is left-recursive"),
    ("root ::= [a-\n", "line 1"),
])
def test_bad_gbnf_refused(llama3c, stories_gguf, tmp_path, gbnf, msg):
    path = _write(tmp_path, "bad.gbnf", gbnf)
    p = run_cli("run", "-m", stories_gguf("f32"), "-p", "x", "--grammar", path, "-n", 5, check=False)
    assert p.returncode != 0 and msg in p.stderr and "bad.gbnf" in p.stderr, p.stderr


def test_dead_state_is_a_clear_error(llama3c, stories_gguf, tmp_path):
    # after "a" the grammar wants a character outside every code point: nothing can continue
    path = _write(tmp_path, "dead.gbnf", "root ::= \"a\" [^\\x00-\\U0010FFFF]\n")
    p = run_cli("run", "-m", stories_gguf("f32"), "-p", "x", "--grammar", path, "-n", 5, check=False)
    assert p.returncode != 0 and "no token" in p.stderr, p.stderr


def test_options_conflict(llama3c, stories_gguf):
    p = run_cli("run", "-m", stories_gguf("f32"), "-p", "x", "--json", "--grammar", "x.gbnf", check=False)
    assert p.returncode == 2 and "only one of" in p.stderr


def test_chat_every_answer_follows_the_schema(llama3c, stories_gguf):
    """chat restarts the grammar for each answer (two turns from stdin)."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"},
                                               "n": {"type": "integer", "minimum": 1, "maximum": 5}},
              "required": ["ok", "n"]}
    p = run_cli("chat", "-m", stories_gguf("f32"), "--json-schema", json.dumps(schema), "-n", 100, "--temp", 1.0,
                "--seed", 9, "--no-timings", input="hi\nagain\n")
    dec, text, pos, answers = json.JSONDecoder(), p.stdout, 0, []
    while text[pos:].strip():  # answers are separated by newlines; JSON whitespace may hold some too
        pos += len(text[pos:]) - len(text[pos:].lstrip())
        value, pos = dec.raw_decode(text, pos)
        answers.append(value)
    assert len(answers) == 2, p.stdout
    for a in answers:
        jsonschema.validate(a, schema)
