"""Comments and docs cite the design documents by a path that says where they are: the repo's
docs/DESIGN_NOTES.md, or ../shared/DESIGN.md, the design sketch beside the repository (not in
it). A bare "DESIGN.md" sends the reader looking for a file the repository does not have.
docs/DESIGN_NOTES.md itself says in its title that its "DESIGN.md" is ../shared/DESIGN.md."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
BARE = re.compile(r"(?<![\w/.-])DESIGN\.md")  # not preceded by a path (../shared/DESIGN.md)


def bare_references(root=ROOT):
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (path.suffix not in (".py", ".md", ".yaml", ".sh", ".cfg") or not path.is_file()
                or rel.parts[0] in (".git", "runs", "published") or rel.parts[0].endswith(".egg-info")
                or str(rel) in ("docs/DESIGN_NOTES.md", "tests/test_design_references.py")):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if BARE.search(line):
                found.append(f"{rel}:{number}")
    return found


def test_bare_references_are_found(tmp_path):
    (tmp_path / "a.py").write_text("# see DESIGN.md\n# ../shared/DESIGN.md is fine\n")
    (tmp_path / "b.md").write_text("docs/DESIGN_NOTES.md and `../shared/DESIGN.md`; (DESIGN.md, note 3)\n")
    assert bare_references(tmp_path) == ["a.py:1", "b.md:1"]


def test_no_comment_cites_a_design_md_that_is_not_in_the_repository():
    assert (ROOT / "docs" / "DESIGN_NOTES.md").exists()
    assert bare_references() == [], 'write "../shared/DESIGN.md (beside the repository)" or docs/DESIGN_NOTES.md'
