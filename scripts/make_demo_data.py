# Builds the demo sample from ../shared/data: real photos, downsized.
import random, sys
from pathlib import Path
from PIL import Image, ImageOps
src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"); dst = Path("src/threeline/demo_data")
def take(folder, n, seed):
    files = sorted(folder.iterdir()); random.Random(seed).shuffle(files); return files[:n]
def save(f, out, side):
    im = ImageOps.exif_transpose(Image.open(f)).convert("RGB"); im.thumbnail((side, side), Image.Resampling.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True); im.save(out, quality=85, optimize=True)
for split, n in (("train", 40), ("valid", 20)):
    for c in ("cats", "dogs"):
        for f in take(src/"dogscats"/split/c, n, 1): save(f, dst/"dogscats"/split/c/f.name, 200)
for split, s2, n in (("train", "train", 40), ("valid", "val", 20)):
    for c in ("ants", "bees"):
        for f in take(src/"hymenoptera"/s2/c, n, 2): save(f, dst/"hymenoptera"/split/c/f.name, 256)
