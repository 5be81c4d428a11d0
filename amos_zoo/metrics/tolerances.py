"""NSD tolerance presets (mm per AMOS label id), each with its source, and the evaluation rules a preset brings
(the FLARE22 script's slice restriction, Dice threshold for NSD and rounding)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TolerancePreset", "TOLERANCE_PRESETS", "get_tolerances"]


@dataclass(frozen=True)
class TolerancePreset:
    """Tolerance per label id in mm, with where the numbers come from."""

    name: str
    per_label: dict[int, float]
    default: float
    source: str
    verified: bool
    #: labels scored only on the reference's axial slices (z index lower <= k < upper, as FLARE22's slicing)
    z_restricted: frozenset[int] = frozenset()
    #: NSD is 0 when the Dice is below this (FLARE22: 0.2); None: always computed
    nsd_min_dice: float | None = None
    #: Dice and NSD rounded to this many decimals (FLARE22: 4); None: not rounded
    decimals: int | None = None

    def for_label(self, label_id: int) -> float:
        """Tolerance for one label (the preset's default when the label is not listed)."""
        return self.per_label.get(label_id, self.default)


def _uniform(mm: float) -> TolerancePreset:
    return TolerancePreset(f"uniform-{mm:g}mm", {}, mm, f"a uniform {mm:g} mm tolerance for every organ", True)


_FLARE_SCRIPT = "JunMa11/FLARE@aad2cc2813d11135d014bf578d4f62cea84ab865 FLARE22/Evaluation/FLARE22_DSC_NSD_Eval.py"
# FLARE22 per-organ tolerances (mm) of that script, mapped to AMOS ids (FLARE22 ids: 1 liver, 2 right kidney,
# 3 spleen, 4 pancreas, 5 aorta, 6 IVC, 7 right adrenal, 8 left adrenal, 9 gallbladder, 10 esophagus, 11 stomach,
# 12 duodenum, 13 left kidney)
_FLARE22 = {1: 3.0, 2: 3.0, 3: 3.0, 4: 2.0, 5: 3.0, 6: 5.0, 7: 5.0, 8: 2.0, 9: 2.0, 10: 5.0, 11: 2.0, 12: 2.0, 13: 7.0}

TOLERANCE_PRESETS: dict[str, TolerancePreset] = {
    "uniform-1mm": _uniform(1.0),
    "uniform-2mm": _uniform(2.0),
    "uniform-5mm": _uniform(5.0),
    "flare22": TolerancePreset(
        "flare22",
        _FLARE22,
        2.0,
        f"{_FLARE_SCRIPT}: label_tolerance (liver 5, kidneys 3, spleen 3, pancreas 5, aorta 2, IVC 2, adrenal glands "
        "2, gallbladder 2, esophagus 3, stomach 5, duodenum 7); aorta, IVC and esophagus scored on the reference's "
        "slices z_lower:z_upper only; NSD 0 when Dice < 0.2; Dice and NSD rounded to 4 decimals. Bladder and "
        "prostate/uterus are not FLARE22 organs: amos-zoo choice, the 2 mm default without restriction",
        True,
        z_restricted=frozenset({8, 9, 5}),
        nsd_min_dice=0.2,
        decimals=4,
    ),
    "amos": TolerancePreset(
        "amos",
        {},
        2.0,
        "UNVERIFIED: the tolerance the AMOS 2022 challenge used for NSD is not confirmed by a retrieved source; "
        "this preset is a uniform 2 mm (the MedSAM / SA-Med2D protocol). Do not present it as the official value.",
        False,
    ),
}


def get_tolerances(preset: str | float | dict[int, float]) -> TolerancePreset:
    """A preset by name, a uniform tolerance from a number, or a custom per-label mapping."""
    if isinstance(preset, TolerancePreset):
        return preset
    if isinstance(preset, (int, float)):
        return _uniform(float(preset))
    if isinstance(preset, dict):
        return TolerancePreset("custom", {int(k): float(v) for k, v in preset.items()}, 2.0, "user-defined", True)
    if preset in TOLERANCE_PRESETS:
        return TOLERANCE_PRESETS[preset]
    try:
        return _uniform(float(str(preset).removesuffix("mm")))
    except ValueError:
        raise ValueError(f"unknown tolerance preset {preset!r}; choose one of {', '.join(TOLERANCE_PRESETS)}") from None
