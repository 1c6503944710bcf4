"""Diffusion autoencoders (Preechakul et al., CVPR 2022): a semantic encoder (picture → z_sem, 512
numbers) and a UNet conditioned on z_sem, compatible with the official FFHQ-256 checkpoints."""
