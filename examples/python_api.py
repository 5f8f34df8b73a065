"""The Python API in a few lines: run with `python examples/python_api.py`."""

from skimage import data

import u2seg

image = data.coffee()  # any path, bytes, PIL image or NumPy array works

# One call: an RGBA cutout on the pretrained U²-Net, the default (fetched and cached on first use).
u2seg.remove(image).save("coffee-cutout.png")

# A Predictor is built once and reused: probability maps, masks, cutouts. U²-Net-P ("u2netp") is
# the fast choice: about twice the images per second on a CPU (README, "Models").
predictor = u2seg.Predictor("u2netp", size=320)
probability = predictor.predict(image)  # float32 H×W in [0, 1]
predictor.mask(image).save("coffee-mask.png")
predictor.cutout(image, bgcolor=(255, 255, 255, 255)).save("coffee-on-white.png")
print(f"foreground covers {(probability > 0.5).mean():.0%} of the picture")

# Models alone, for training or export: logits (d0 fused, d1 … d6) at the input size.
model = u2seg.create_model("u2netp", pretrained=True)
print(u2seg.list_models(), sum(p.numel() for p in model.parameters()))
