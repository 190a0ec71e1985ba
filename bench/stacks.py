"""Top functions of a collapsed-stack profile (py-spy `--format raw`, one `a;b;c N` a line).

    .venv/bin/python bench/stacks.py hub.txt [--top 15] [--under FUNC]

Own time counts a sample for the innermost frame only; cumulative time counts it once for every
distinct function on the stack, so a caller includes its callees. Frames are grouped by
function and file (line numbers dropped). `--under FUNC` keeps only the stacks that pass
through a function whose name contains FUNC (e.g. `create_task`), to split one request path.
"""

import argparse
import re
from collections import Counter

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    return f"{match['func']} ({match['file']})" if match else frame.strip()


def load(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack and count.isdigit():
                stacks.append(([frame_name(f) for f in stack.split(";")], int(count)))
    return stacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--under", help="only stacks through a function containing this")
    args = parser.parse_args()
    stacks = load(args.profile)
    total = sum(count for _, count in stacks)
    if args.under:
        stacks = [(s, c) for s, c in stacks if any(args.under in f.split(" (")[0] for f in s)]
    picked = sum(count for _, count in stacks)
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    for stack, count in stacks:
        own[stack[-1]] += count
        for name in set(stack):
            cumulative[name] += count
    print(f"{picked} of {total} samples" + (f" under {args.under}" if args.under else ""))
    for title, counter in (("own", own), ("cumulative", cumulative)):
        print(f"\n{title:>10}   %all  function (file)")
        for name, count in counter.most_common(args.top):
            print(f"{count:10d} {100 * count / total:6.1f}  {name}")


if __name__ == "__main__":
    main()
