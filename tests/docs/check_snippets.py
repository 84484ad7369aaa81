#!/usr/bin/env python3
"""Fails when a code snippet of a Markdown guide differs from the compiled file it claims to come from.

In the guide, a snippet is a fenced block between marker comments:

    <!-- snippet: examples/integration/decode_step.cpp#decode -->
    ```cpp
    ...
    ```
    <!-- /snippet -->

`path#name` names the region of the file between the lines `// [snippet name]` and `// [/snippet]` (or
`# [snippet name]` / `# [/snippet]` in CMake), with its common indentation removed; `path` alone names the
whole file. Paths are relative to the repository root. The check also fails when a C++ or CMake block of
the guide is not a snippet (all such code must be compiled), and when a region of a file the guide cites,
or of any file under examples/integration/, is not shown.

Usage: check_snippets.py GUIDE.md [--update]   (--update rewrites the guide's snippets from the files)
"""

import argparse
import difflib
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEGIN = re.compile(r"^\s*<!--\s*snippet:\s*(\S+?)\s*-->\s*$")
END = re.compile(r"^\s*<!--\s*/snippet\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(```+)\s*([\w+-]*)\s*$")
REGION_BEGIN = re.compile(r"^\s*(?://|#)\s*\[snippet\s+([\w-]+)\]\s*$")
REGION_END = re.compile(r"^\s*(?://|#)\s*\[/snippet\]\s*$")
COMPILED_LANGUAGES = {"cpp", "c++", "cxx", "cmake"}


def regions(path):
    """Every named region of `path`: name -> dedented text (lines end with newline)."""
    found, name, lines = {}, None, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(keepends=True), 1):
        begin = REGION_BEGIN.match(line)
        if begin:
            if name is not None:
                raise ValueError(f"{path}:{number}: region '{begin.group(1)}' starts inside region '{name}'")
            name, lines = begin.group(1), []
        elif REGION_END.match(line):
            if name is None:
                raise ValueError(f"{path}:{number}: [/snippet] without a region")
            found[name] = textwrap.dedent("".join(lines))
            name = None
        elif name is not None:
            lines.append(line)
    if name is not None:
        raise ValueError(f"{path}: region '{name}' is not closed")
    return found


def source_text(reference, cache):
    """The text a `path[#name]` reference stands for."""
    path_text, _, name = reference.partition("#")
    path = ROOT / path_text
    if not path.is_file():
        raise ValueError(f"snippet source {path_text} does not exist")
    if not name:
        return path.read_text(encoding="utf-8")
    if path not in cache:
        cache[path] = regions(path)
    if name not in cache[path]:
        raise ValueError(f"{path_text} has no region '{name}' (it has: {', '.join(sorted(cache[path])) or 'none'})")
    return cache[path][name]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("guide", type=Path)
    parser.add_argument("--update", action="store_true", help="rewrite the guide's snippets from their files")
    args = parser.parse_args()

    lines = args.guide.read_text(encoding="utf-8").splitlines(keepends=True)
    problems, output, cache, used = [], [], {}, set()
    i = 0
    while i < len(lines):
        line = lines[i]
        begin = BEGIN.match(line)
        fence = FENCE.match(line)
        if fence and not begin:
            if fence.group(3).lower() in COMPILED_LANGUAGES:
                problems.append(f"{args.guide}:{i + 1}: a {fence.group(3)} block that is not a snippet of a compiled file")
            closing = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence.group(2)), len(lines) - 1)
            output.extend(lines[i:closing + 1])
            i = closing + 1
            continue
        output.append(line)
        i += 1
        if not begin:
            continue
        reference, start = begin.group(1), i
        opening = FENCE.match(lines[i]) if i < len(lines) else None
        closing = next((j for j in range(i + 1, len(lines)) if opening and lines[j].strip() == opening.group(2)), None)
        if not opening or closing is None or closing + 1 >= len(lines) or not END.match(lines[closing + 1]):
            problems.append(f"{args.guide}:{start}: snippet {reference} must be one fenced block followed by <!-- /snippet -->")
            continue
        shown = "".join(lines[i + 1:closing])
        try:
            expected = source_text(reference, cache)
        except (OSError, ValueError) as e:
            problems.append(f"{args.guide}:{start}: {e}")
            expected = shown
        used.add(reference)
        if shown != expected:
            if args.update:
                print(f"updated {reference}")
            else:
                diff = difflib.unified_diff(expected.splitlines(keepends=True), shown.splitlines(keepends=True),
                                            f"{reference} (compiled)", f"{args.guide}:{i + 2} (guide)")
                problems.append(f"{args.guide}:{start}: snippet {reference} differs from its file:\n" + "".join(diff))
        output.append(lines[i])
        output.append(expected)
        output.extend(lines[closing:closing + 2])
        i = closing + 2

    for path in sorted((ROOT / "examples" / "integration").glob("*.cpp")):
        if path not in cache:
            cache[path] = regions(path)
    for path, named in cache.items():
        for name in sorted(named):
            reference = f"{path.relative_to(ROOT).as_posix()}#{name}"
            if reference not in used:
                problems.append(f"{reference}: a snippet region the guide does not show")

    if args.update:
        args.guide.write_text("".join(output), encoding="utf-8")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.guide}: {len(used)} snippets match their compiled files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
