"""`segbench predict` and `segbench export mesh`: a trained model on a CT volume
(worker.inference does the work; torch loads inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from db.protocol import BOUNDARY_MODES
from worker.cli.app import app
from worker.cli.options import FormatOpt, check_format, fail, print_json, user_errors
from worker.cli.results import export_app
from worker.cli.train import DeviceOpt, chosen_device

ModelOpt = Annotated[Path, typer.Option("--model", help="Model folder (safetensors + json).")]
InputOpt = Annotated[Path, typer.Option("--input", help="CT volume in HU (.nii/.nii.gz).")]
LungOpt = Annotated[
    Path | None,
    typer.Option("--lung-model", help="Lung model folder (for lesion-segmentation-b models)."),
]


@app.command()
def predict(
    model: ModelOpt,
    input: InputOpt,
    output: Annotated[Path, typer.Option("--output", help="Mask to write (.nii.gz).")],
    lung_model: LungOpt = None,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option(help="Slices per forward pass.", min=1, max=4096)] = 8,
    reference: Annotated[
        Path | None,
        typer.Option(help="Ground-truth mask: also report Dice and NSD (percent), HD95 (mm)."),
    ] = None,
    nsd_tolerance_mm: Annotated[
        float,
        typer.Option("--nsd-tolerance-mm", help="NSD tolerance in mm (above 0), as on submit."),
    ] = 2.0,
    old_tolerance_mm: Annotated[
        float | None, typer.Option("--tolerance-mm", hidden=True, help="Deprecated.")
    ] = None,
    boundary_mode: Annotated[
        str,
        typer.Option(
            help="Surface of NSD/HD95: surface-area (area-weighted surfels, default) "
            "or border-voxel (border voxels weighing one)."
        ),
    ] = "surface-area",
    format: FormatOpt = "table",
) -> None:
    """Segment every axial slice of a CT volume with a saved model (on a GPU if there is one)."""
    from worker.inference.predict import predict_file

    check_format(format)
    tolerance_mm, option = nsd_tolerance_mm, "--nsd-tolerance-mm"
    if old_tolerance_mm is not None:
        typer.echo(
            "warning: --tolerance-mm is deprecated and will be removed; use --nsd-tolerance-mm "
            "(the name submit and train use).",
            err=True,
        )
        tolerance_mm, option = old_tolerance_mm, "--tolerance-mm"
    if not tolerance_mm > 0:
        fail(f"{option} must be above 0, got {tolerance_mm:g}.")
    if boundary_mode not in BOUNDARY_MODES:
        fail(
            f"Unknown --boundary-mode '{boundary_mode}'; expected one of: "
            f"{', '.join(BOUNDARY_MODES)}."
        )
    device, device_text = chosen_device(device)
    with user_errors():
        summary = predict_file(
            model, input, output, lung_model_dir=lung_model, device=device, batch_size=batch_size
        )
        if reference is not None:
            summary["reference"] = _against_reference(
                output, reference, tolerance_mm, boundary_mode
            )
    if format == "json":
        print_json(summary)
        return
    if summary["synthetic_training_data"]:
        typer.echo(
            "note: this model was trained on SYNTHETIC stand-in data; its masks mean "
            "nothing on real CT.",
            err=True,
        )
    typer.echo(
        f"{summary['output']}: {summary['voxels']} voxels ({summary['volume_ml']:.1f} ml) in "
        f"{summary['slices_with_foreground']} of {summary['shape'][2]} slices, "
        f"{summary['model']}, {summary['seconds']:.1f} s on {device_text}"
    )
    if reference is not None:
        r = summary["reference"]
        hd = f"{r['hd95']:.2f} mm" + (
            " (one mask empty: the volume's diagonal)" if r["missed"] else ""
        )
        typer.echo(
            f"against {reference}: Dice {r['dice']:.2f}%, NSD@{tolerance_mm:g}mm "
            f"{r['nsd']:.2f}%, HD95 {hd} ({r['boundary_mode']} surfaces), {r['resolution']}"
        )


def _against_reference(output: Path, reference: Path, tolerance_mm: float, mode: str) -> dict:

    import nibabel as nib
    import numpy as np

    from worker.inference.predict import PredictError
    from worker.training.boundary import boundary_metrics

    if not reference.is_file():
        raise PredictError(f"Reference mask {reference} does not exist.")
    pred_img = nib.load(str(output))
    try:
        truth = np.asarray(nib.load(str(reference)).dataobj) > 0
    except Exception as exc:
        raise PredictError(f"{reference} is not a readable NIfTI mask ({exc}).") from exc
    pred = np.asarray(pred_img.dataobj) > 0
    if truth.shape != pred.shape:
        raise PredictError(
            f"Reference mask {reference} has shape {truth.shape}; expected the input's "
            f"{pred.shape}."
        )
    spacing = [float(z) for z in pred_img.header.get_zooms()[:3]]
    metrics = boundary_metrics(truth, pred, spacing, tolerance_mm, mode)
    # Percent, like every Dice segbench reports (train, status, the dashboard).
    shape = " x ".join(map(str, truth.shape))
    mm = " x ".join(f"{s:g}" for s in spacing)
    return {
        "dice": 100 * metrics["dice"],
        "nsd": 100 * metrics["nsd"],
        "hd95": metrics["hd95"],  # the volume's diagonal where exactly one mask is empty
        "missed": metrics["missed"],
        "tolerance_mm": metrics["tolerance_mm"],
        "boundary_mode": mode,
        "units": {"dice": "percent", "nsd": "percent", "hd95": "mm"},
        "resolution": f"scored at the input's resolution ({shape} voxels of {mm} mm), not at "
        "the model's image size at which a run's stored test metrics are computed",
    }


@export_app.command("mesh")
def export_mesh(
    output: Annotated[Path, typer.Option("--output", help="lesion.stl or lesion.obj.")],
    model: Annotated[Path | None, typer.Option("--model", help="Model folder.")] = None,
    input: Annotated[Path | None, typer.Option("--input", help="CT volume (HU).")] = None,
    lung_model: LungOpt = None,
    mask: Annotated[
        Path | None, typer.Option("--mask", help="Mesh this mask instead of predicting one.")
    ] = None,
    device: DeviceOpt = None,
) -> None:
    """3-D surface (marching cubes, mm) of a predicted or given mask (paper Fig. 7)."""
    import nibabel as nib
    import numpy as np

    from worker.inference.mesh import mask_surface, mesh_volume, write_mesh
    from worker.inference.predict import PredictError, load_saved_model, read_ct, segment

    if model is not None:
        device, _ = chosen_device(device)
    with user_errors():
        if (mask is None) == (model is None or input is None):
            raise PredictError("Give either --model and --input, or --mask.")
        if mask is not None:
            if not mask.is_file():
                raise PredictError(f"Mask file {mask} does not exist.")
            img = nib.load(str(mask))
            volume = np.asarray(img.dataobj) > 0
        else:
            saved = load_saved_model(model, device)
            lungs = load_saved_model(lung_model, device) if lung_model else None
            img, hu = read_ct(input)
            volume = segment(saved, hu, lung_model=lungs, device=device).mask
        spacing = [float(z) for z in img.header.get_zooms()[:3]]
        verts, faces = mask_surface(volume, spacing)
        write_mesh(output, verts, faces)
    typer.echo(
        f"{output}: {len(faces)} triangles, {mesh_volume(verts, faces) / 1000:.1f} ml enclosed"
    )
