"""Kotlin and Java definitions, checked against values worked out by hand from the fixtures.

tests/fixtures/kotlin/Shapes.kt and tests/fixtures/java/Cart.java hold one of every kind of
definition; the expected names, spans, docs, bodies and modifiers below were read off the
files (`cat -n`), not produced by the code under test.
"""

from __future__ import annotations

from pathlib import Path

import pathspec
import pytest

from repotune.languages import Definition, definitions, parser, paths_of_tests
from repotune.languages.java import clean_doc, is_test_class_name

FIXTURES = Path(__file__).parent / "fixtures"


def parse(lang: str, src: str | bytes) -> list[Definition]:
    data = src.encode("utf-8") if isinstance(src, str) else src
    root = parser(lang).parse(data).root_node
    assert not root.has_error, "the test's own code must be valid for the grammar"
    return list(definitions(lang, root, data))


@pytest.fixture(scope="module")
def kotlin() -> dict[str, Definition]:
    defs = parse("kotlin", (FIXTURES / "kotlin" / "Shapes.kt").read_bytes())
    return {d.qualified_name: d for d in defs}


@pytest.fixture(scope="module")
def java() -> dict[str, Definition]:
    defs = parse("java", (FIXTURES / "java" / "Cart.java").read_bytes())
    return {d.qualified_name: d for d in defs}


# --- Kotlin --------------------------------------------------------------------------------

KOTLIN_DEFINITIONS = [
    # (name, qualified_name, kind, start_line, end_line), in source order
    ("Shape", "Shape", "interface", 16, 23),
    ("area", "Shape.area", "method", 20, 20),
    ("describe", "Shape.describe", "method", 22, 22),
    ("Circle", "Circle", "class", 26, 42),
    ("Circle", "Circle.Circle", "constructor", 27, 27),
    ("area", "Circle.area", "method", 29, 31),
    ("Companion", "Circle.Companion", "object", 33, 41),
    ("of", "Circle.Companion.of", "method", 35, 36),
    ("unit", "Circle.Companion.unit", "method", 38, 40),
    ("Color", "Color", "enum", 44, 53),
    ("label", "Color.RED.label", "method", 46, 46),
    ("label", "Color.GREEN.label", "method", 49, 49),
    ("label", "Color.label", "method", 52, 52),
    ("Registry", "Registry", "object", 55, 64),
    ("register", "Registry.register", "method", 58, 61),
    ("isBig", "Registry.isBig", "extension_function", 63, 63),
    ("Scaler", "Scaler", "interface", 66, 68),
    ("scale", "Scaler.scale", "method", 67, 67),
    ("defaultScaler", "defaultScaler", "function", 72, 72),
    ("shout", "shout", "extension_function", 75, 75),
    ("largest", "largest", "function", 77, 80),
    ("key", "largest.key", "function", 78, 78),
    ("nativeArea", "nativeArea", "function", 82, 82),
    ("CircleTest", "CircleTest", "class", 84, 91),
    ("areaOfUnitCircle", "CircleTest.areaOfUnitCircle", "method", 85, 88),
    ("helper", "CircleTest.helper", "method", 90, 90),
    ("Checks", "Checks", "class", 93, 98),
    ("scales by a factor", "Checks.scales by a factor", "method", 94, 95),
    ("notATest", "Checks.notATest", "method", 97, 97),
]


def test_kotlin_finds_every_definition_in_source_order() -> None:
    defs = parse("kotlin", (FIXTURES / "kotlin" / "Shapes.kt").read_bytes())
    got = [(d.name, d.qualified_name, d.kind, d.start_line, d.end_line) for d in defs]
    assert got == KOTLIN_DEFINITIONS


def test_kotlin_doc_comments(kotlin: dict[str, Definition]) -> None:
    assert kotlin["Shape"].doc == (
        "A shape on the plane.\n"
        "\n"
        "Every shape is immutable; build one with a factory:\n"
        "\n"
        "    val c = Circle.of(2.0)\n"
        "\n"
        "@param name the display name"
    )
    assert kotlin["Shape.area"].doc == "The area, in square units."
    # The KDoc comes before the annotation, which stays in the code.
    assert kotlin["Circle.Companion.of"].doc == "A circle of the given [radius]."
    assert kotlin["shout"].doc == "Shouts the receiver."
    assert kotlin["Circle"].doc is None  # `/* Not a doc comment. */`
    assert kotlin["Circle.Companion.unit"].doc is None  # KDoc after the annotation: misplaced
    assert kotlin["defaultScaler"].doc is None  # the KDoc above belongs to DEFAULT_SCALE
    assert kotlin["Circle.area"].doc is None


def test_kotlin_code_and_text(kotlin: dict[str, Definition]) -> None:
    of = kotlin["Circle.Companion.of"]
    assert of.code == (
        "        @JvmStatic\n"
        "        fun of(radius: Double): Circle = Circle(radius)"
    )
    assert of.text == (
        "        /** A circle of the given [radius]. */\n"
        "        @JvmStatic\n"
        "        fun of(radius: Double): Circle = Circle(radius)"
    )
    unit = kotlin["Circle.Companion.unit"]
    assert unit.code == unit.text == (
        '        @Deprecated("use of")\n'
        "        /** Misplaced: after an annotation. */\n"
        "        fun unit(): Circle = of(1.0)"
    )
    circle = kotlin["Circle"]
    assert circle.text == circle.code
    assert circle.code.startswith("data class Circle(override val name: String")
    assert circle.code.endswith("        fun unit(): Circle = of(1.0)\n    }\n}")
    assert kotlin["Shape"].text.startswith("/**\n * A shape on the plane.\n")
    assert kotlin["Shape"].code.startswith("sealed interface Shape {\n")


def test_kotlin_bodies(kotlin: dict[str, Definition]) -> None:
    assert kotlin["Circle.area"].body == "{\n        return PI * radius * radius\n    }"
    assert kotlin["Shape.describe"].body == '"$name with area ${area()}"'  # `= expr`: the expr
    assert kotlin["Circle.Companion.of"].body == "Circle(radius)"
    assert kotlin["shout"].body == 'uppercase() + "!"'
    for abstract in ("Shape.area", "Color.label", "Scaler.scale", "nativeArea"):
        assert kotlin[abstract].body is None, abstract
    assert kotlin["Circle.Circle"].body is None  # `constructor(...) : this(...)` without a block
    assert kotlin["Registry"].body.startswith("{\n    private val shapes")
    assert kotlin["Checks.scales by a factor"].body == "{}"


def test_kotlin_modifiers(kotlin: dict[str, Definition]) -> None:
    expected = {
        "Shape": ("sealed",),
        "Circle": ("data",),
        "Circle.area": ("override",),
        "Circle.Companion": ("companion",),
        "Circle.Companion.of": ("@JvmStatic",),
        "Circle.Companion.unit": ('@Deprecated("use of")',),
        "Color": ("enum",),
        "Color.RED.label": ("override",),
        "Color.label": ("abstract",),
        "Registry": (),
        "Registry.register": ("@Synchronized", "internal"),
        "Scaler": ("fun",),
        "largest": ("suspend",),
        "nativeArea": ("external",),
        "CircleTest.areaOfUnitCircle": ("@Test",),
        "Checks.scales by a factor": ("@ParameterizedTest",),
        "shout": (),
    }
    assert {q: kotlin[q].modifiers for q in expected} == expected


def test_kotlin_is_test(kotlin: dict[str, Definition]) -> None:
    tests = {q for q, d in kotlin.items() if d.is_test}
    assert tests == {
        "CircleTest",  # *Test class
        "CircleTest.areaOfUnitCircle",  # @Test, and inside a *Test class
        "CircleTest.helper",  # inside a *Test class
        "Checks.scales by a factor",  # @ParameterizedTest
    }


def test_kotlin_small_cases() -> None:
    defs = parse(
        "kotlin",
        "@file:Suppress(\"unused\")\n"
        "\n"
        "/** Top. */\n"
        "fun top() = 1\n"
        "/** first */\n"
        "/** second */\n"
        "fun stacked() = 3\n"
        "/**/\n"
        "fun empty() = 4\n"
        "class Point(val x: Int)\n"
        "class Box {\n"
        "    companion object Factory {\n"
        "        fun String?.orEmpty2(): String = this ?: \"\"\n"
        "    }\n"
        "}\n"
        "@org.junit.Test\n"
        "fun qualified() {}\n",
    )
    by_name = {d.name: d for d in defs}
    # The grammar hangs this comment under the @file annotation; it is still top's KDoc.
    assert by_name["top"].doc == "Top."
    stacked = by_name["stacked"]
    assert stacked.doc == "second"  # the nearest KDoc wins
    assert stacked.text == "/** second */\nfun stacked() = 3"
    assert by_name["empty"].doc is None  # `/**/` is an empty plain comment
    assert (by_name["Point"].kind, by_name["Point"].body) == ("class", None)
    assert (by_name["Factory"].kind, by_name["Factory"].qualified_name) == ("object", "Box.Factory")
    ext = by_name["orEmpty2"]
    assert (ext.kind, ext.qualified_name) == ("extension_function", "Box.Factory.orEmpty2")
    assert by_name["qualified"].is_test
    # Alone in its file: after another declaration, tree-sitter-kotlin 1.1.0 cannot parse a
    # `/** d */ fun` line (it continues the previous line's expression or misses the `;`).
    [one] = parse("kotlin", "/** d */ fun oneLine() = 2\n")
    assert (one.doc, one.code, one.text) == ("d", "fun oneLine() = 2", "/** d */ fun oneLine() = 2")


# --- Java ----------------------------------------------------------------------------------

JAVA_DEFINITIONS = [
    ("Cart", "Cart", "class", 19, 105),
    ("Cart", "Cart.Cart", "constructor", 25, 27),
    ("add", "Cart.add", "method", 35, 39),
    ("size", "Cart.size", "method", 42, 44),
    ("iterator", "Cart.iterator", "method", 46, 61),
    ("hasNext", "Cart.iterator.hasNext", "method", 51, 54),  # in an anonymous class
    ("next", "Cart.iterator.next", "method", 56, 59),
    ("checksum", "Cart.checksum", "method", 64, 64),
    ("Discount", "Cart.Discount", "interface", 66, 72),
    ("apply", "Cart.Discount.apply", "method", 67, 67),
    ("label", "Cart.Discount.label", "method", 69, 71),
    ("Status", "Cart.Status", "enum", 74, 86),
    ("editable", "Cart.Status.OPEN.editable", "method", 76, 79),
    ("editable", "Cart.Status.editable", "method", 83, 85),
    ("Item", "Cart.Item", "record", 88, 96),
    ("Item", "Cart.Item.Item", "constructor", 89, 91),  # compact constructor
    ("free", "Cart.Item.free", "method", 93, 95),
    ("Base", "Cart.Base", "class", 98, 100),
    ("reset", "Cart.Base.reset", "method", 99, 99),
    ("Audited", "Cart.Audited", "interface", 102, 104),
    ("value", "Cart.Audited.value", "method", 103, 103),
    ("CartTest", "CartTest", "class", 107, 115),
    ("addsItems", "CartTest.addsItems", "method", 108, 112),
    ("helper", "CartTest.helper", "method", 114, 114),
    ("CartChecks", "CartChecks", "class", 117, 123),
    ("checksSize", "CartChecks.checksSize", "method", 118, 120),
    ("notATest", "CartChecks.notATest", "method", 122, 122),
]


def test_java_finds_every_definition_in_source_order() -> None:
    defs = parse("java", (FIXTURES / "java" / "Cart.java").read_bytes())
    got = [(d.name, d.qualified_name, d.kind, d.start_line, d.end_line) for d in defs]
    assert got == JAVA_DEFINITIONS


def test_java_doc_comments(java: dict[str, Definition]) -> None:
    assert java["Cart"].doc == (
        "A shopping cart.\n"
        "\n"
        "<p>Example:\n"
        "<pre>\n"
        '  Cart cart = new Cart("alice");\n'
        "</pre>\n"
        "\n"
        "@author someone"
    )
    assert java["Cart.Cart"].doc == "Creates an empty cart for {@code owner}."
    assert java["Cart.add"].doc == "Adds an item.\n\n@param item the item to add\n@return this cart"
    assert java["Cart.size"].doc is None  # `/* Not a doc comment. */`
    # A plain comment between the Javadoc and the declaration does not detach it (javac).
    assert java["Cart.checksum"].doc == "Package-private on purpose."
    assert java["Cart.iterator"].doc is None


def test_java_code_and_text(java: dict[str, Definition]) -> None:
    add = java["Cart.add"]
    code = (
        "    @Deprecated\n"
        "    public synchronized Cart add(Item item) {\n"
        "        items.add(item);\n"
        "        return this;\n"
        "    }"
    )
    assert add.code == code
    assert add.text == (
        "    /**\n"
        "     * Adds an item.\n"
        "     *\n"
        "     * @param item the item to add\n"
        "     * @return this cart\n"
        "     */\n" + code
    )
    checksum = java["Cart.checksum"]
    assert checksum.code == "    /* package */ static native long checksum(byte[] data);"
    assert checksum.text == (
        "    /** Package-private on purpose. */\n"
        "    /* package */ static native long checksum(byte[] data);"
    )
    assert java["Cart.size"].text == java["Cart.size"].code == (
        "    public int size() {\n        return items.size();\n    }"
    )


def test_java_bodies(java: dict[str, Definition]) -> None:
    bodiless = ("Cart.checksum", "Cart.Discount.apply", "Cart.Base.reset", "Cart.Audited.value")
    for qualname in bodiless:
        assert java[qualname].body is None, qualname
    assert java["Cart.Discount.label"].body == '{\n            return "discount";\n        }'
    assert java["Cart.Cart"].body == "{\n        this.owner = owner;\n    }"
    assert java["Cart.Item.Item"].body == (
        '{\n            if (cents < 0) throw new IllegalArgumentException("negative");\n        }'
    )
    assert java["Cart.Audited"].body == '{\n        String value() default "";\n    }'
    assert java["CartChecks.checksSize"].body == "{}"


def test_java_modifiers(java: dict[str, Definition]) -> None:
    expected = {
        "Cart": ('@SuppressWarnings("unchecked")', "public"),
        "Cart.Cart": ("public",),
        "Cart.add": ("@Deprecated", "public", "synchronized"),
        "Cart.size": ("public",),
        "Cart.iterator.hasNext": ("@Override", "public"),
        "Cart.checksum": ("static", "native"),
        "Cart.Discount.apply": (),
        "Cart.Discount.label": ("default",),
        "Cart.Item": ("public",),
        "Cart.Item.Item": ("public",),
        "Cart.Base": ("abstract", "static"),
        "Cart.Base.reset": ("protected", "abstract"),
        "CartTest.addsItems": ("@org.junit.jupiter.api.Test",),
        "CartTest.helper": ("private",),
        "CartChecks.checksSize": ("@ParameterizedTest", "@ValueSource(ints = {1, 2})"),
    }
    assert {q: java[q].modifiers for q in expected} == expected


def test_java_is_test(java: dict[str, Definition]) -> None:
    tests = {q for q, d in java.items() if d.is_test}
    assert tests == {
        "CartTest",
        "CartTest.addsItems",  # @org.junit.jupiter.api.Test
        "CartTest.helper",  # inside a *Test class
        "CartChecks.checksSize",  # @ParameterizedTest
    }


def test_java_small_cases() -> None:
    defs = parse(
        "java",
        "class A { void f() {} }\n"
        "class B {\n"
        "    @Deprecated\n"
        "    /** Late. */\n"
        "    void g() {}\n"
        "    /** Doc. */\n"
        "    // a note\n"
        "    void h() {}\n"
        "    void local() {\n"
        "        class Helper {}\n"
        "        Runnable r = () -> {};\n"
        "    }\n"
        "}\n",
    )
    by_name = {d.name: d for d in defs}
    assert [d.qualified_name for d in defs] == [
        "A", "A.f", "B", "B.g", "B.h", "B.local", "B.local.Helper"
    ]
    assert by_name["f"].code == "void f() {}"  # not `class A { void f() {} }`
    g = by_name["g"]
    assert g.doc is None  # a Javadoc after an annotation is ignored by javadoc too
    assert g.code == g.text == "    @Deprecated\n    /** Late. */\n    void g() {}"
    h = by_name["h"]
    assert (h.doc, h.code) == ("Doc.", "    void h() {}")
    assert h.text == "    /** Doc. */\n    // a note\n    void h() {}"
    assert by_name["Helper"].kind == "class"


# --- shared helpers ------------------------------------------------------------------------


def test_clean_doc() -> None:
    assert clean_doc("/** One line. */") == "One line."
    assert clean_doc("/**\n * Summary.\n *\n * @param x the x\n */") == "Summary.\n\n@param x the x"
    # Lines without a leading `*` keep their relative indentation.
    assert clean_doc("/**\n   Summary.\n     indented\n */") == "Summary.\n  indented"
    # One space after the `*` goes; more is indentation of the doc text.
    assert clean_doc("/**\n *   code();\n * Text. \n */") == "  code();\nText."
    assert clean_doc("/** Text.\n * more */") == "Text.\nmore"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CartTest", True),
        ("CartTests", True),
        ("TestCart", True),
        ("Test", True),
        ("Test2", True),
        ("Testable", False),
        ("Latest", False),
        ("Contest", False),
        ("Cart", False),
    ],
)
def test_is_test_class_name(name: str, expected: bool) -> None:
    assert is_test_class_name(name) is expected


# --- test files (TEST_PATHS) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "path", "expected"),
    [
        ("kotlin", "lib/src/commonMain/kotlin/a/Foo.kt", False),
        ("kotlin", "src/commonTest/kotlin/a/Foo.kt", True),  # a source set at the root
        ("kotlin", "lib/src/jvmTest/kotlin/a/Foo.kt", True),  # ... and in a module
        ("kotlin", "a/b/lib/src/iosTest/kotlin/Foo.kt", True),
        ("kotlin", "lib/src/androidUnitTest/kotlin/Foo.kt", True),
        ("kotlin", "lib/src/androidInstrumentedTest/kotlin/Foo.kt", True),
        ("kotlin", "lib/src/test/kotlin/Foo.kt", True),
        ("kotlin", "lib/src/testFixtures/kotlin/Foo.kt", True),
        ("kotlin", "app/src/main/kotlin/x/FooTest.kt", True),
        ("kotlin", "app/src/main/kotlin/x/FooTests.kt", True),
        ("kotlin", "app/src/main/kotlin/x/FooIT.kt", True),
        ("kotlin", "app/src/main/kotlin/x/TestabilityHelper.kt", False),
        ("kotlin", "app/src/main/kotlin/x/Contest.kt", False),
        ("kotlin", "app/src/main/kotlin/x/footest.kt", False),  # names are case-sensitive
        ("kotlin", "app/srcTest/x/Foo.kt", False),  # not a source set: no src/ folder above
        ("kotlin", "app/src/main/kotlin/testing/Probe.kt", False),  # testing/ is Python's layout
        ("java", "app/src/androidTest/java/x/Screen.java", True),
        ("java", "app/src/androidTestDebug/java/x/Screen.java", True),
        ("java", "app/src/testRelease/java/x/Screen.java", True),
        ("java", "app/src/main/java/x/ServiceIT.java", True),
        ("java", "app/src/main/java/x/Http2IT.java", True),
        ("java", "app/src/main/java/x/JIT.java", False),  # a compiler, not an integration test
        ("java", "app/src/main/java/x/CartTests.java", True),
        ("java", "app/src/main/java/x/Latest.java", False),
        ("java", "app/src/contest/java/x/A.java", False),
        ("python", "pkg/tests/util.py", True),
        ("python", "pkg/test/util.py", True),
        ("python", "pkg/testing/helpers.py", True),
        ("python", "pkg/test_x.py", True),
        ("python", "pkg/x_test.py", True),
        ("python", "pkg/sub/conftest.py", True),
        ("python", "pkg/latest.py", False),
        ("python", "pkg/contest_entry.py", False),
    ],
)
def test_each_language_names_its_test_files(lang: str, path: str, expected: bool) -> None:
    spec = pathspec.PathSpec.from_lines("gitignore", paths_of_tests(lang))
    assert spec.match_file(path) is expected


def test_every_registered_language_provides_the_contract():
    """Each language module has every attribute of languages.LanguageModule, and the registry is
    the one list of names and file suffixes (no suffix belongs to two languages)."""
    import re

    from repotune.languages import LANGUAGES, LanguageModule

    wanted = {*LanguageModule.__annotations__, *(n for n, v in vars(LanguageModule).items()
                                                 if callable(v) and not n.startswith("_"))}
    suffixes = [s for module in LANGUAGES.values() for s in module.EXTENSIONS]
    assert len(suffixes) == len(set(suffixes)) and all(s.startswith(".") for s in suffixes)
    for name, module in LANGUAGES.items():
        assert wanted <= set(dir(module)), (name, sorted(wanted - set(dir(module))))
        assert isinstance(module.SUPER_CALL, re.Pattern) and "name" in module.SUPER_CALL.groupindex
        assert module.BLOCK_COMMENT is None or len(module.BLOCK_COMMENT) == 2


def test_body_shapes_and_deprecation_markers_are_the_languages():
    from repotune.languages import body_statements, marked_deprecated

    assert body_statements("kotlin", "= a + b") == ["a + b"]
    assert body_statements("java", "{\n    return a;\n}") == ["return a;"]
    assert body_statements("python", "a = 1\n    return a") == ["a = 1", "return a"]
    stub = 'def old():\n    warnings.warn("old is deprecated", DeprecationWarning)\n    return new()\n'
    assert marked_deprecated("python", stub) and marked_deprecated("python", "@deprecated\ndef f():\n    pass\n")
    assert not marked_deprecated("python", "def f():\n    return 1\n")
    # Kotlin/Java code is not read for deprecation (their doc comment's @deprecated is).
    assert not marked_deprecated("kotlin", stub) and not marked_deprecated("java", stub)
