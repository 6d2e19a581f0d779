"""Training the toy checkpoint of issue 12 (TOY_WORLD.md): stages that write the official layout.

The runtime never imports this package. Backbone part: `text_tokenizer` (word-level tokenizer.json),
`backbone_config` (config.json), `thinking_plan` (the thinking mode's plan sentence), `backbone_data`
(training sequences built through the runtime's own request builders), `backbone_objective` (the masked
block-diffusion loss), `backbone` (the resumable stage `train_backbone` and `write_backbone`) and
`backbone_eval` (`evaluate_backbone`, a code-level gate through the runtime's generation functions).
"""
