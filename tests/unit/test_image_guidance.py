"""Image guidance, measured: higher keeps the edit closer to the input.

A random-weight model follows no instruction, so this test first teaches a tiny InstructPix2Pix
model (real diffusers classes, trained here for about half a minute on the CPU) what the method's
training teaches the real one: with the instruction it makes an edit that loses some of the
picture (here: "make it flat" pulls the latents halfway to their mean), without it it returns the
picture, and without the picture it knows nothing about it. Then the real Edit engine runs at
several image-guidance values; the distance of the result to what the model can reproduce of the
input (its VAE round trip) must fall as the image guidance rises. In the guidance formula the
image term restores (g_i − 1)·(picture − mean) while the text term removes g_t·½·(picture − mean),
so with g_t = 3 the distance falls until g_i = 2.5; the test checks 1, 1.5, 2 and 2.5.
"""

import numpy as np
import pytest
import torch

from engines import registry, testing
from engines.api import CancelToken, Request, Task

SIDE = 128  # pixels; 16×16 latents keep the training short


@pytest.fixture(scope="module")
def taught_model(tmp_path_factory, photo):
    torch.manual_seed(0)
    pipe = testing.build_pipeline("instruct")
    vae, unet, scheduler = pipe.vae, pipe.unet, pipe.scheduler
    rng = np.random.default_rng(0)

    @torch.no_grad()
    def embed(text):
        ids = pipe.tokenizer([text], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return pipe.text_encoder(ids)[0]

    @torch.no_grad()
    def latents(batch):
        crops = []
        for _ in range(batch):
            y, x = rng.integers(0, photo.shape[0] - SIDE, 2)
            crops.append(photo[y : y + SIDE, x : x + SIDE])
        pixels = torch.tensor(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
        return vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor

    edit, plain = embed("make it flat"), embed("")
    optimiser = torch.optim.Adam(unet.parameters(), lr=2e-3)
    alphas = scheduler.alphas_cumprod
    for _ in range(400):
        z = latents(8)
        mean = z.mean(dim=(2, 3), keepdim=True)
        with_text = (torch.rand(8) < 0.5)[:, None, None, None]
        with_image = (torch.rand(8) < 0.85)[:, None, None, None]
        target = torch.where(with_text, mean + 0.5 * (z - mean), z)
        condition = torch.where(with_image, z, torch.zeros_like(z))
        words = torch.where(with_text[:, :, 0], edit.expand(8, -1, -1), plain.expand(8, -1, -1))
        t = torch.randint(0, 1000, (8,))
        noise = torch.randn_like(z)
        a = alphas[t][:, None, None, None]
        noisy = a.sqrt() * target + (1 - a).sqrt() * noise
        loss = ((unet(torch.cat([noisy, condition], 1), t, encoder_hidden_states=words).sample - noise) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    folder = tmp_path_factory.mktemp("taught-ip2p")
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder, vae


def test_higher_image_guidance_keeps_the_input_closer(taught_model, photo):
    folder, vae = taught_model
    picture = np.ascontiguousarray(photo[180:180 + SIDE, 200:200 + SIDE])
    with torch.no_grad():
        pixels = torch.tensor(picture).permute(2, 0, 1)[None].float() / 127.5 - 1
        round_trip = vae.decode(vae.encode(pixels).latent_dist.mean).sample
    reproducible = ((round_trip[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().numpy()

    engine = registry.get("edit")
    distances = []
    for image_guidance in (1.0, 1.5, 2.0, 2.5):
        request = Request(Task.EDIT, picture, None, prompt="make it flat", guidance_scale=3.0, steps=20, seed=1, model=str(folder),
                          params={"method": "instruct", "image_guidance": image_guidance, "scheduler": "DDIM"})
        result = engine.run(request, lambda s: None, CancelToken()).image
        distances.append(float(np.abs(result - reproducible).mean()))
    print("image guidance 1, 1.5, 2, 2.5 → mean distance to the VAE round trip:", [round(d, 2) for d in distances])
    assert all(a > b for a, b in zip(distances, distances[1:])), distances
