"""The escaping module (tinycc.backends.names) against the compilers that read its output: hostile strings in
comments leave gcc's and g++'s token streams unchanged, string literals hold exactly the input's bytes,
identifiers are valid and never clash with the runtime's names; the template guard refuses raw text."""
from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest

from tinycc.backends import names

HOSTILE = [
    '*/ { int system(const char *); system("touch MARKER"); } //', "/* opened", "*/", "/", "*", "/*/", "**//",
    "x\n#include <stdlib.h>\nint pwn = system(\"touch MARKER\");", "cr\r#define main pwn", "trailing \\", "\\",
    "\\\n", '"); system("touch MARKER"); ("', "'", "$(touch MARKER)", "`touch MARKER`", "ctl \x01\x07\x08\x0b\x7f",
    "\x1b]0;title\x07\x1b[31mred\x1b[0m", "\u202egnp.exe\u2066 \u2067 \u2069", "nul \x00 byte",
    "modèle ²½ ŉ 模型 🤖", "L" * 5000, "int", "tcc_buffer_count", "main", "??/", "??=define x ??/", "???/", "?",
    "\u2028 line sep \u0085 nel \t tab", "", "\udcff\udcfe undecodable bytes", "-- *\\/ \\*/",
]


def _random_strings(n: int, seed: int = 0) -> list[str]:
    """Strings over the characters that matter (delimiters, quotes, controls, bidi, surrogates, non-ASCII)."""
    rng = random.Random(seed)
    alphabet = list("*/\\?\"'`$#()=;{}\n\r\t \x00\x1b\x7f\x85") + ["\u202e", "\u2066", "\u2028", "\udcff", "é",
                                                                   "½", "ŉ", "模", "🤖", "a", "Z", "0", "_"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) for _ in range(n)]


CASES = HOSTILE + _random_strings(400)


def _tokens(path: Path, compiler: str, std: str) -> str:
    """The translation unit's tokens after preprocessing (trigraphs and line splices applied, comments gone)."""
    r = subprocess.run([compiler, f"-std={std}", "-trigraphs", "-E", "-P", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return " ".join(r.stdout.split())


@pytest.mark.parametrize("compiler,std,ext", [("gcc", "c99", "c"), ("g++", "c++17", "cc")])
def test_comments_never_change_the_code(tmp_path: Path, compiler: str, std: str, ext: str) -> None:
    """Every escaped string in a block comment and at the end of a line comment: the preprocessed tokens are
    exactly the marker tokens around them, and gcc -Wall -Wextra -Werror -pedantic (-Wcomment, -Wtrigraphs)
    accepts the file."""
    lines, want = [], []
    for i, s in enumerate(CASES):
        text = names.comment(s)
        assert "\n" not in text and "\r" not in text and all(" " <= c <= "~" for c in text)
        assert "*/" not in text and "/*" not in text and "??" not in text and not text.endswith("\\")
        lines += [f"/* {text} */ int a{i} = {i}; /*{text}*/", f"int b{i} = {i}; // {text}", f"int c{i} = {i};"]
        want += [f"int a{i} = {i};", f"int b{i} = {i};", f"int c{i} = {i};"]
    src = tmp_path / f"t.{ext}"
    src.write_text("\n".join(lines) + "\n")
    assert _tokens(src, compiler, std) == " ".join(" ".join(want).split())
    r = subprocess.run([compiler, f"-std={std}", "-trigraphs", "-Wall", "-Wextra", "-Werror", "-pedantic",
                        "-Wcomment", "-Wtrigraphs", "-c", str(src), "-o", str(tmp_path / "t.o")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


def test_comment_limit_and_escapes() -> None:
    assert names.comment("L" * 5000) == "L" * names.COMMENT_LIMIT + "..."
    assert names.comment("conv2d/kernel") == "conv2d/kernel"  # ordinary names unchanged
    assert names.comment("a\x1b[31m\u202e\\") == "a\\x1b[31m\\u202e\\x5c"
    assert names.comment("*/x") == "* /x" and names.comment("/*x") == "/ *x" and names.comment("a??/") == "a? ?/"


def test_makefile_comment_is_one_comment(tmp_path: Path) -> None:
    """In a Makefile, ``# TEXT`` stays a comment: the rule after it runs, nothing else does."""
    body = "".join(f"# {names.comment(s)}\n" for s in CASES)
    (tmp_path / "Makefile").write_text(body + "all:\n\t@echo ok\n")
    r = subprocess.run(["make", "-s", "-C", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "ok\n", (r.stdout, r.stderr)
    assert not list(tmp_path.rglob("MARKER"))


def test_c_string_holds_the_input_bytes(tmp_path: Path) -> None:
    """The compiled literal is the input's UTF-8 (undecodable bytes as they were), nothing more."""
    cases = [s for s in CASES if "\x00" not in s]
    decls = "\n".join(f"static const char s{i}[] = {names.c_string(s)};" for i, s in enumerate(cases))
    prints = "\n".join(f"    dump(s{i}, sizeof s{i} - 1);" for i in range(len(cases)))
    (tmp_path / "s.c").write_text("#include <stdio.h>\n" + decls + "\nstatic void dump(const char *s, size_t n) {\n"
                                  "    size_t i;\n    for (i = 0; i < n; ++i) printf(\"%02x\", (unsigned char)s[i]);\n"
                                  "    printf(\"\\n\");\n}\nint main(void) {\n" + prints + "\n    return 0;\n}\n")
    exe = tmp_path / "s"
    r = subprocess.run(["gcc", "-std=c99", "-trigraphs", "-Wall", "-Wextra", "-Werror", "-pedantic",
                        str(tmp_path / "s.c"), "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    limit = names.COMMENT_LIMIT
    assert out == [(s if len(s) <= limit else s[:limit] + "...").encode("utf-8", "surrogateescape").hex()
                   for s in cases]


def test_c_identifier() -> None:
    extra = ["tcc", "TCC", "tcc_buffer_count", "tinycc_demo", "arm_nn", "cmsis_nn", "tflite", "0", "__init__",
             "a__b_", "Test", "x.h5", *sorted(names.C_KEYWORDS)]
    for text in CASES + extra:
        ident = names.c_identifier(text)
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*", ident), ident  # no __, no leading/trailing _
        assert len(ident) <= names.IDENTIFIER_LIMIT
        assert ident.lower() not in names.RESERVED_NAMES and ident not in names.C_KEYWORDS
        low = ident.lower()  # never the runtime's tcc_/TCC_/tinycc_ names, CMSIS-NN's arm_, ...
        assert not any(low == p or low.startswith(p + "_") for p in names.RESERVED_PREFIXES), ident
        assert names.c_identifier(ident) == ident  # idempotent: backends may apply it again


def test_c_identifier_of_the_reported_file_names() -> None:
    got = {s: names.c_identifier(s) for s in ("x½", "²x", "ŉ", "modèle", "tcc", "tcc__x", "tccnet", "digits_cnn")}
    assert got == {"x½": "x1_2", "²x": "m_2x", "ŉ": "n", "modèle": "modele", "tcc": "m_tcc", "tcc__x": "m_tcc_x",
                   "tccnet": "tccnet", "digits_cnn": "digits_cnn"}


def test_markdown() -> None:
    for s in CASES:
        span = names.md_code(s)
        fence = re.match(r"`+", span).group(0)
        inner = span[len(fence):-len(fence)]
        assert span.endswith(fence) and "\n" not in span and all(" " <= c <= "~" for c in span)
        assert fence not in re.findall(r"`+", inner)  # no run in the content closes the span early
        block = names.md_block(s + "\n```\n" + s).split("\n")
        assert block[0] == block[-1] and set(block[0]) == {"`"}
        assert all(block[0] not in l for l in block[1:-1]) and all(" " <= c <= "~" for l in block for c in l)


def test_terminal() -> None:
    for s in CASES:
        t = names.terminal(s)
        assert t.isprintable(), repr(t)
        assert "\x1b" not in t and "\u202e" not in t
    assert names.terminal("modèle \x1b[31m") == "modèle \\x1b[31m"  # readable text stays readable


def test_template_guard_refuses_raw_model_text() -> None:
    import jinja2

    env = names.install(jinja2.Environment())
    tpl = env.from_string("f(); /* {{ x }} */")
    assert tpl.render(x="conv2d/kernel 3x3") == "f(); /* conv2d/kernel 3x3 */"
    for bad in ('*/ system("x"); /*', "a\nb", "é", "\x1b", "a\\", '"', "??/"):
        with pytest.raises(names.UnescapedText):
            tpl.render(x=bad)
    assert env.from_string("/* {{ x|comment }} */").render(x="*/ a").startswith("/* * / a")
