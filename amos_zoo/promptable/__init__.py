"""Promptable 2D baselines (SAM ViT-B, MedSAM, SAM-Med2D): models, their authors' input pipelines, prompt
protocols with seeded, replayable prompts, evaluation on SA-Med2D-layout folders and MedSAM-style fine-tuning.

``amos-zoo evaluate-prompts`` runs one model under one prompt protocol; see README "Promptable 2D baselines".
"""

from amos_zoo._lazy import lazy_exports

_MODULES = {
    "amos_zoo.promptable.models": ("PROMPTABLE_MODELS", "build_promptable", "get_promptable"),
    "amos_zoo.promptable.protocols": ("get_prompt_protocol", "list_prompt_protocols"),
    "amos_zoo.promptable.weights": ("PROMPTABLE_WEIGHTS", "load_promptable_weights"),
    "amos_zoo.promptable.evaluate": ("evaluate_prompts",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
