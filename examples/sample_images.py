"""Write the photos that scikit-image ships (no download needed) into a folder, for the demo."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image
from skimage import data

NAMES = ("astronaut", "coffee", "chelsea", "rocket")


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        Image.fromarray(getattr(data, name)()).save(out / f"{name}.jpg", quality=95)
    print(f"wrote {len(NAMES)} images to {out}/")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sample-images")
