"""Training of the toy checkpoint (issue 12) on the shapes world. The runtime never imports this package.

Image path (this branch): `image_configs` (sizes), `vae`, `image_tokenizer`, `decoder` (normal + turbo),
`image_writer` (official layout). Each stage is `train_<stage>(work_dir, *, seed, ...)`: seeded, resumable from
`work_dir/<stage>/state.pt`, skipped once `work_dir/<stage>/report.json` says done.
"""
