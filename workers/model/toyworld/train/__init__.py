"""Training the toy checkpoint of issue 12 (TOY_WORLD.md): stages that write the official layout.

The runtime never imports this package. `python -m workers.model.toyworld.train` runs every stage in order
(`__main__`); each stage is `train_<stage>(work_dir, *, seed, …)`: seeded, resumable from its state under
`work_dir/<stage>/`, skipped once its report says done, with its wall time and figures in that report.

Image path: `image_configs` (sizes), `stage` (the shared stage machinery), `data` (scene pools, views,
augmentation), `vae`, `image_tokenizer` (SigLIP-VQ trained as a classifier onto the designed codes of
`toyworld.codes`), `decoder` (SigVQ + Z-Image DiT, normal and turbo), `image_writer` (official layout) and
`image_gate` (reconstruction: tokenizer → decoder → VAE → checker).

Backbone part: `text_tokenizer` (word-level tokenizer.json), `backbone_config` (config.json), `thinking_plan`
(the thinking mode's plan sentence), `backbone_data` (training sequences built through the runtime's own
request builders), `backbone_objective` (the masked block-diffusion loss), `backbone` (`train_backbone`,
`write_backbone`) and `backbone_eval` (`evaluate_backbone`, a code-level gate through the runtime's
generation functions).
"""
