/*
 * test_server_tools.c -- the server's tool-call protocol pieces (apps/server/tools.c, included):
 *  - tools_parse_reply: well-formed calls of known functions become OpenAI tool_calls (arguments
 *    as compact JSON text), both protocols, several calls, parallel_tool_calls false; anything
 *    else (unknown function, arguments not an object, invalid or truncated JSON, text around the
 *    call, extra keys, another function than the one named) is not a call (the server then
 *    returns it as text);
 *  - tools_parse: the 400s name the field (tools[i].function.name, .parameters, tool_choice, ...);
 *  - tools_calls_schema: the schema of a call (name as const, the tool's parameters, required,
 *    no other keys; generic: the tool_calls array, maxItems 1 without parallel calls);
 *  - tools_response_format: text / json_object / json_schema and its 400s.
 */
#include "../../apps/server/api_error.c"
#include "../../apps/server/tools.c"

#include "check.h"

static void fake_id(char *dst, size_t cap, const char *prefix) {
    static int n;
    snprintf(dst, cap, "%s%d", prefix, n++);
}

static const char *k_tools =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":"
    "\"object\","
    "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}]";

static api_tools *make_tools(l3c_chat_template tmpl, const char *extra) {
    char body[2048];
    snprintf(body, sizeof body, "{\"tools\":%s%s%s}", k_tools, extra ? "," : "",
             extra ? extra : "");
    json_t *j = json_loads(body, 0, NULL);
    api_tools *t = NULL;
    api_error err = {0};
    unsigned st = tools_parse(NULL, tmpl, j, &t, &err);
    CHECK_MSG(st == 0 && t, "%s", err.message);
    json_decref(j);
    return t;
}

/* Number of calls parsed from text (-1: not a call); the first call's name and arguments. */
static int parse(const api_tools *t, const char *text, char *name, char *args) {
    json_t *calls = tools_parse_reply(t, text, strlen(text), fake_id);
    if (!calls) return -1;
    int n = (int)json_array_size(calls);
    json_t *f = json_object_get(json_array_get(calls, 0), "function");
    CHECK(
        !strcmp(json_string_value(json_object_get(json_array_get(calls, 0), "type")), "function"));
    CHECK(!strncmp(json_string_value(json_object_get(json_array_get(calls, 0), "id")), "call_", 5));
    if (name) strcpy(name, json_string_value(json_object_get(f, "name")));
    if (args) strcpy(args, json_string_value(json_object_get(f, "arguments")));
    json_decref(calls);
    return n;
}

static void test_parse_llama31(void) {
    api_tools *t = make_tools(L3C_CHAT_LLAMA31, NULL);
    char name[80], args[256];
    CHECK(t->protocol == TOOLS_LLAMA31 && t->choice == TOOLS_AUTO && t->parallel);
    CHECK(parse(t, " \n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n", name,
                args) == 1);
    CHECK(!strcmp(name, "get_weather") && !strcmp(args, "{\"city\":\"Paris\"}"));
    CHECK(parse(t, "{\"name\": \"get_time\", \"arguments\": {}}", name, args) == 1); /* alias */
    CHECK(!strcmp(name, "get_time") && !strcmp(args, "{}"));
    CHECK(parse(t,
                "{\"name\": \"get_time\", \"parameters\": {}}; {\"name\": \"get_weather\", "
                "\"parameters\": "
                "{\"city\": \"Oslo\"}}",
                NULL, NULL) == 2);
    CHECK(parse(t,
                "[{\"name\": \"get_time\", \"parameters\": {}}, {\"name\": \"get_time\", "
                "\"parameters\": {}}]",
                NULL, NULL) == 2);
    /* not calls */
    CHECK(parse(t, "{\"name\": \"get_wether\", \"parameters\": {}}", NULL, NULL) ==
          -1); /* unknown */
    CHECK(parse(t, "{\"name\": \"get_time\", \"parameters\": \"{}\"}", NULL, NULL) ==
          -1); /* not an object */
    CHECK(parse(t, "{\"name\": \"get_time\", \"parameters\": {\"a\": ", NULL, NULL) ==
          -1); /* truncated */
    CHECK(parse(t, "{\"name\": \"get_time\", \"parameters\": {}} thanks", NULL, NULL) ==
          -1); /* trailing text */
    CHECK(parse(t, "Sure: {\"name\": \"get_time\", \"parameters\": {}}", NULL, NULL) ==
          -1); /* leading text */
    CHECK(parse(t, "{\"name\": \"get_time\", \"parameters\": {}, \"x\": 1}", NULL, NULL) ==
          -1);                                                     /* extra key */
    CHECK(parse(t, "{\"name\": \"get_time\"}", NULL, NULL) == -1); /* no arguments */
    CHECK(parse(t, "The weather is fine.", NULL, NULL) == -1);
    CHECK(parse(t, "   ", NULL, NULL) == -1);
    CHECK(parse(t, "[]", NULL, NULL) == -1);
    tools_free(t);

    t = make_tools(L3C_CHAT_LLAMA3, "\"parallel_tool_calls\":false");
    CHECK(t->protocol == TOOLS_LLAMA31 && !t->parallel);
    CHECK(parse(t,
                "{\"name\": \"get_time\", \"parameters\": {}}; {\"name\": \"get_weather\", "
                "\"parameters\": {}}",
                name, NULL) == 1);
    CHECK(!strcmp(name, "get_time"));
    tools_free(t);

    t = make_tools(L3C_CHAT_LLAMA31,
                   "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}");
    CHECK(t->choice == TOOLS_NAMED && !strcmp(t->named, "get_time"));
    CHECK(parse(t, "{\"name\": \"get_time\", \"parameters\": {}}", NULL, NULL) == 1);
    CHECK(parse(t, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"x\"}}", NULL, NULL) ==
          -1);
    tools_free(t);

    t = make_tools(L3C_CHAT_LLAMA31, "\"tool_choice\":\"none\"");
    CHECK(t->choice == TOOLS_NONE && !t->defs_json);
    CHECK(parse(t, "{\"name\": \"get_time\", \"parameters\": {}}", NULL, NULL) == -1);
    tools_free(t);
}

static void test_parse_generic(void) {
    api_tools *t = make_tools(L3C_CHAT_CHATML, "\"tool_choice\":\"required\"");
    char name[80], args[256];
    CHECK(t->protocol == TOOLS_GENERIC && t->choice == TOOLS_REQUIRED);
    CHECK(
        parse(
            t,
            "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}]}",
            name, args) == 1);
    CHECK(!strcmp(name, "get_weather") && !strcmp(args, "{\"city\":\"Rome\"}"));
    CHECK(parse(t,
                "{\"tool_calls\": [{\"name\": \"get_time\", \"arguments\": {}}, {\"name\": "
                "\"get_time\", "
                "\"arguments\": {}}]}",
                NULL, NULL) == 2);
    CHECK(parse(t, "{\"tool_calls\": []}", NULL, NULL) == -1);
    CHECK(parse(t, "{\"content\": \"hi\"}", NULL, NULL) == -1);
    CHECK(parse(t, "{\"tool_calls\": [{\"name\": \"nope\", \"arguments\": {}}]}", NULL, NULL) ==
          -1);
    CHECK(parse(t, "{\"tool_calls\": [{\"name\": \"get_time\", \"arguments\": {}}], \"x\": 1}",
                NULL, NULL) == -1);
    CHECK(parse(t, "{\"tool_calls\": [{\"name\": \"get_time\", \"arguments\": {}}", NULL, NULL) ==
          -1);
    CHECK(parse(t, "{\"name\": \"get_time\", \"parameters\": {}}", NULL, NULL) ==
          -1); /* the other protocol */
    tools_free(t);
}

static void expect_bad(l3c_chat_template tmpl, const char *body, const char *param) {
    json_t *j = json_loads(body, 0, NULL);
    CHECK_MSG(j != NULL, "test body is not JSON: %s", body);
    api_tools *t = NULL;
    api_error err = {0};
    unsigned st = tools_parse(NULL, tmpl, j, &t, &err);
    if (!st) {
        char *fmt = NULL;
        st = tools_response_format(j, &fmt, &err);
        free(fmt);
    }
    CHECK_MSG(st == 400 && !t && !strcmp(err.param, param),
              "%s: status %u, param '%s' (want '%s'): %s", body, st, err.param, param, err.message);
    json_decref(j);
}

static void test_validation(void) {
    const l3c_chat_template c = L3C_CHAT_CHATML;
    expect_bad(c, "{\"tools\":{}}", "tools");
    expect_bad(c, "{\"tools\":[]}", "tools");
    expect_bad(c, "{\"tools\":[1]}", "tools[0]");
    expect_bad(c, "{\"tools\":[{\"function\":{\"name\":\"f\"}}]}", "tools[0].type");
    expect_bad(c, "{\"tools\":[{\"type\":\"function\"}]}", "tools[0].function");
    expect_bad(
        c,
        "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},{\"type\":\"function\","
        "\"function\":{\"description\":\"no name\"}}]}",
        "tools[1].function.name");
    expect_bad(c, "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"bad name\"}}]}",
               "tools[0].function.name");
    expect_bad(
        c,
        "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},{\"type\":\"function\","
        "\"function\":{\"name\":\"f\"}}]}",
        "tools[1].function.name");
    expect_bad(
        c,
        "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},{\"type\":\"function\","
        "\"function\":{\"name\":\"g\",\"parameters\":[1]}}]}",
        "tools[1].function.parameters");
    expect_bad(
        c,
        "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
        "\"object\",\"properties\":{\"a\":{\"type\":\"strnig\"}}}}}]}",
        "tools[0].function.parameters");
    expect_bad(
        c, "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":3}}]}",
        "tools[0].function.description");
    expect_bad(c,
               "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":"
               "\"always\"}",
               "tool_choice");
    expect_bad(c,
               "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":"
               "{\"type\":"
               "\"function\",\"function\":{\"name\":\"g\"}}}",
               "tool_choice");
    expect_bad(c, "{\"tool_choice\":\"required\"}", "tool_choice");
    expect_bad(c, "{\"parallel_tool_calls\":1}", "parallel_tool_calls");
    expect_bad(c, "{\"response_format\":\"json\"}", "response_format");
    expect_bad(c, "{\"response_format\":{\"type\":\"xml\"}}", "response_format.type");
    expect_bad(c, "{\"response_format\":{\"type\":\"json_schema\"}}",
               "response_format.json_schema");
    expect_bad(c,
               "{\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{}}}}",
               "response_format.json_schema.name");
    expect_bad(c,
               "{\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
               "\"schema\":3}}}",
               "response_format.json_schema.schema");
    expect_bad(c,
               "{\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
               "\"strict\":\"yes\"}}}",
               "response_format.json_schema.strict");

    json_t *j =
        json_loads("{\"response_format\":{\"type\":\"text\"},\"tool_choice\":\"none\"}", 0, NULL);
    api_tools *t = NULL;
    char *fmt = NULL;
    api_error err = {0};
    CHECK(tools_parse(NULL, L3C_CHAT_CHATML, j, &t, &err) == 0 && !t);
    CHECK(tools_response_format(j, &fmt, &err) == 0 && !fmt);
    json_decref(j);
    j = json_loads("{\"response_format\":{\"type\":\"json_object\"}}", 0, NULL);
    CHECK(tools_response_format(j, &fmt, &err) == 0 && fmt &&
          !strcmp(fmt, "{\"type\":\"object\"}"));
    free(fmt);
    json_decref(j);
}

static void test_schema(void) {
    api_tools *t = make_tools(L3C_CHAT_LLAMA31, NULL);
    char *s = tools_calls_schema(t);
    CHECK(
        s &&
        !strcmp(
            s,
            "{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"get_weather\"},"
            "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
            "\"required\":[\"city\"]}},\"required\":[\"name\",\"parameters\"],"
            "\"additionalProperties\":"
            "false},{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"get_time\"},"
            "\"parameters\":"
            "{\"type\":\"object\"}},\"required\":[\"name\",\"parameters\"],"
            "\"additionalProperties\":false}]}"));
    free(s);
    tools_free(t);
    t = make_tools(L3C_CHAT_ZEPHYR,
                   "\"parallel_tool_calls\":false,\"tool_choice\":{\"type\":\"function\","
                   "\"function\":{\"name\":\"get_time\"}}");
    s = tools_calls_schema(t);
    CHECK_MSG(s && !strcmp(s, "{\"type\":\"object\",\"properties\":{\"tool_calls\":{\"type\":"
                              "\"array\",\"items\":{"
                              "\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"get_"
                              "time\"},\"arguments\":{"
                              "\"type\":\"object\"}},\"required\":[\"name\",\"arguments\"],"
                              "\"additionalProperties\":false},"
                              "\"minItems\":1,\"maxItems\":1}},\"required\":[\"tool_calls\"],"
                              "\"additionalProperties\":"
                              "false}"),
              "%s", s);
    free(s);
    tools_free(t);
}

int main(void) {
    test_parse_llama31();
    test_parse_generic();
    test_validation();
    test_schema();
    return CHECK_DONE("test_server_tools");
}
