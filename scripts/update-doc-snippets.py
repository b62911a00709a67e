#!/usr/bin/env python3
"""Rewrites every `<!-- snippet: PATH#TAG -->` code block in README.md and docs/*.md from the
tagged region of its compiled source (the test DocSnippets checks that they match)."""
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
marker = re.compile(r"(<!-- snippet: ([^#]+)#([\w-]+) -->\n```\w*\n)(.*?)(```)", re.S)


def region(path, tag):
    text = (root / path).read_text()
    m = f"# [{tag}]\n" if path.endswith(".py") else f"// [{tag}]\n"
    start = text.index(m) + len(m)
    return text[start:text.index(m, start)]


for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
    text = doc.read_text()
    new = marker.sub(lambda m: m.group(1) + region(m.group(2), m.group(3)) + m.group(5), text)
    if new != text:
        doc.write_text(new)
        print(f"updated {doc.relative_to(root)}")
