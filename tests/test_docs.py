"""The documentation stands on its own: every relative link in the Markdown files resolves
inside the repository (anchors included), no user-facing text points outside it, and every
citation of docs/math.md names a section and equations that exist there."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MATH = ROOT / "docs" / "math.md"

MARKDOWN = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"),
                   *(ROOT / "benchmarks").rglob("*.md")])
SOURCES = sorted([*(ROOT / "tallskinny_np").rglob("*.py"), *(ROOT / "verify").glob("*.py"),
                  *(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "tests").glob("*.py")])
USER_FACING = MARKDOWN + SOURCES

# Split so that this file does not match its own patterns.
FORBIDDEN = {
    "a private design note": re.compile(re.escape("DESIGN" + ".md")),
    "a folder outside the repository": re.compile(re.escape(".." + "/shared")
                                                  + "|(?<![\\w.])/(?:work|tmp|home)/"),
    "an issue number": re.compile(r"\bissues? ?#?\d+", re.IGNORECASE),
}

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$", re.M)
SECTION_CITATION = re.compile(
    r"docs/math\.md,?\s+sections?\s+(\d+(?:\.\d+)?(?:(?:,|\s+and|\s+to)\s+\d+(?:\.\d+)?)*)")
BARE_SECTION_CITATION = re.compile(
    r"\bsections?\s+(\d+(?:\.\d+)?(?:(?:,|\s+and|\s+to)\s+\d+(?:\.\d+)?)*)")
EQUATION_CITATION = re.compile(
    r"\beqs?\.\s+\(\d+\.\d+\)(?:\s*(?:,|-|and|to)\s*\(\d+\.\d+\))*")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def relative(path):
    return path.relative_to(ROOT).as_posix()


def line_of(text, index):
    return text.count("\n", 0, index) + 1


def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    return {slug(title) for _, title in HEADING.findall(path.read_text())}


def math_sections():
    """Numbers of the sections and subsections of docs/math.md: "4" for "## 4. ...",
    "4.6" for "### 4.6 ..."."""
    found = set()
    for level, title in HEADING.findall(MATH.read_text()):
        m = re.match(r"(\d+(?:\.\d+)?)\.?\s", title)
        if m and len(level) in (2, 3):
            found.add(m.group(1))
    return found


def math_equations():
    """Numbers of the equations of docs/math.md, each written ``(N.K)`` at the end of the
    line that displays it."""
    return set(re.findall(r"\((\d+\.\d+)\)[ \t]*$", MATH.read_text(), re.M))


def citations(text, markdown_about_math):
    """``(line, kind, number)`` for each section or equation number cited in text. In
    Markdown that speaks of docs/math.md, a bare "section N" cites it too."""
    out = []
    patterns = [SECTION_CITATION] + ([BARE_SECTION_CITATION] if markdown_about_math else [])
    for pattern in patterns:
        for m in pattern.finditer(text):
            out += [(line_of(text, m.start()), "section", n)
                    for n in NUMBER.findall(m.group(1))]
    for m in EQUATION_CITATION.finditer(text):
        out += [(line_of(text, m.start()), "equation", n)
                for n in re.findall(r"\((\d+\.\d+)\)", m.group(0))]
    return out


def test_math_note_has_the_numbered_sections_that_are_cited():
    sections = math_sections()
    assert {str(n) for n in range(1, 10)} <= sections, sorted(sections)
    assert len(math_equations()) > 50


def test_the_table_of_contents_lists_every_section_of_the_math_note():
    sections = re.findall(r"^## (\d+)\. (.+)$", MATH.read_text(), re.M)
    listed = re.findall(r"^ +(\d+)\. ", (ROOT / "docs" / "README.md").read_text(), re.M)
    assert listed == [number for number, _ in sections]

@pytest.mark.parametrize("path", MARKDOWN, ids=relative)
def test_relative_links_resolve_inside_the_repository(path):
    broken = []
    text = path.read_text()
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):       # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{relative(path)}:{line_of(text, m.start())}: {target}"
        if not dest.is_relative_to(ROOT):
            broken.append(f"{where} (outside the repository)")
        elif not dest.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{where} (no such heading)")
    assert not broken, "\n".join(broken)


def test_no_user_facing_text_points_outside_the_repository():
    offending = []
    for path in USER_FACING:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for what, pattern in FORBIDDEN.items():
                if pattern.search(line):
                    offending.append(f"{relative(path)}:{number}: {what}: {line.strip()}")
    assert not offending, "\n".join(offending)


def test_citations_of_the_math_note_exist():
    sections, equations = math_sections(), math_equations()
    known = {"section": sections, "equation": equations}
    missing = []
    for path in USER_FACING:
        if path == MATH:
            continue
        text = path.read_text()
        about_math = path.suffix == ".md" and "docs/math.md" in text
        for line, kind, number in citations(text, about_math):
            if number not in known[kind]:
                missing.append(f"{relative(path)}:{line}: {kind} {number}")
    assert not missing, "\n".join(missing)


def test_the_checks_can_fail():
    """The patterns catch what they are meant to catch."""
    assert FORBIDDEN["an issue number"].search("as asked in Issue " + "#12")
    assert not FORBIDDEN["an issue number"].search("no issues with 3 layers")
    assert FORBIDDEN["a private design note"].search("see " + "DESIGN" + ".md section 4")
    assert citations("docs/math.md sections 3 and 4.6, eqs. (2.1)-(2.3)", False) == [
        (1, "section", "3"), (1, "section", "4.6"), (1, "equation", "2.1"),
        (1, "equation", "2.3")]
    assert slug("4. Solving (H + eps I) x = g") == "4-solving-h--eps-i-x--g"

