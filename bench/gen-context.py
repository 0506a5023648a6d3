#!/usr/bin/env python3
"""Writes the build benchmark's big context: 20,000 files, 230,000,000 bytes, in nested directories.

Deterministic: the same seed gives the same tree, byte for byte, on every machine (Python's
Mersenne Twister and its randbytes are specified to be reproducible for a given seed).

Sizes are a mix like a source tree with some assets: 70% of files under 2 KiB, 25% of 2-16 KiB,
4.5% of 16-128 KiB and 0.5% (100 files) of 128 KiB-2 MiB, then all scaled so that the total is
exactly TOTAL_BYTES. Directories are 1 to 4 levels deep with 8 entries per level. One file,
`changing.txt` at the top, is small and fixed; the benchmark's "one file changed" scenario rewrites it.

    bench/gen-context.py OUTDIR     (OUTDIR must not exist or be empty)
"""
import os
import random
import sys

SEED = 20261123
FILES = 20_000
TOTAL_BYTES = 230_000_000
FANOUT = 8
MAX_DEPTH = 4
CHANGING = "changing.txt"
CHANGING_CONTENT = b"initial content of the file that the one-file-changed scenario rewrites\n"

# (share of files, smallest size, largest size), shares summing to 1.
SIZE_CLASSES = [
    (0.700, 0, 2 << 10),
    (0.250, 2 << 10, 16 << 10),
    (0.045, 16 << 10, 128 << 10),
    (0.005, 128 << 10, 2 << 20),
]


def sizes(rng, count):
    """File sizes drawn from SIZE_CLASSES, scaled to add up to TOTAL_BYTES (minus the changing file)."""
    target = TOTAL_BYTES - len(CHANGING_CONTENT)
    raw = []
    for share, low, high in SIZE_CLASSES:
        raw.extend(rng.randint(low, high) for _ in range(round(share * count)))
    raw = raw[:count] + [rng.randint(0, 2 << 10) for _ in range(count - len(raw))]
    rng.shuffle(raw)
    scale = target / sum(raw)
    scaled = [int(size * scale) for size in raw]
    scaled[0] += target - sum(scaled)  # rounding remainder, so the total is exact
    return scaled


def directory(rng):
    depth = rng.randint(1, MAX_DEPTH)
    return os.path.join(*(f"d{level}{rng.randrange(FANOUT)}" for level in range(depth)))


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    if os.listdir(out):
        sys.exit(f"{out}: not empty; remove it first")
    rng = random.Random(SEED)
    with open(os.path.join(out, CHANGING), "wb") as file:
        file.write(CHANGING_CONTENT)
    for index, size in enumerate(sizes(rng, FILES - 1)):
        parent = os.path.join(out, directory(rng))
        os.makedirs(parent, exist_ok=True)
        with open(os.path.join(parent, f"f{index:05}.bin"), "wb") as file:
            file.write(rng.randbytes(size))


if __name__ == "__main__":
    main()
