"""Train a tiny nnU-Net v2 model with nnunetv2 itself, on synthetic papyrus, for end-to-end checks.

    /work/venvs/nnunet/bin/python bench/train_tiny_nnunet.py -o /tmp/nnunet [--folds 0 1]
        [--cases 6] [--shape 48] [--iterations 20]

Needs an environment with nnunetv2 (see bench/bench_nnunet.py for how to make one); kaggle-offline
never needs it. Writes ``OUT/nnUNet_raw/Dataset901_SyntheticSurface`` (3D TIFFs with Tiff3DIO
spacing sidecars, labels 0 background / 1 surface / 2 ignore, like the competition's), runs
``nnUNetv2_plan_and_preprocess`` (default planner, 3d_fullres: ZScore, a PlainConvUNet) and trains
each fold for one short epoch on the CPU with ``nnUNetTrainerTiny``, a trainer class defined only
here: nnU-Net's own predictor cannot find it by name (as with the organizers' custom trainer),
while ``python -m runtime predict`` never needs it. The trained-model folder is printed last:

    OUT/nnUNet_results/Dataset901_SyntheticSurface/nnUNetTrainerTiny__nnUNetPlans__3d_fullres

Its weights are barely trained (one short epoch): it checks formats and agreement, not quality.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

DATASET_ID = 901
DATASET = f"Dataset{DATASET_ID}_SyntheticSurface"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--folds", type=int, nargs="+", default=[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--shape", type=int, default=48, help="cubic training volume edge")
    parser.add_argument("--iterations", type=int, default=20, help="training iterations")
    args = parser.parse_args()
    out = args.output.resolve()
    env = {
        "nnUNet_raw": str(out / "nnUNet_raw"),
        "nnUNet_preprocessed": str(out / "nnUNet_preprocessed"),
        "nnUNet_results": str(out / "nnUNet_results"),
        "nnUNet_n_proc_DA": "1",  # the planner needs >= 1; training below runs it in-process
        "nnUNet_compile": "false",
    }
    os.environ.update(env)
    _write_raw(out / "nnUNet_raw" / DATASET, args.cases, args.shape)
    if (out / "nnUNet_preprocessed" / DATASET / "nnUNetPlans.json").is_file():
        print("planned and preprocessed already: training only")
    else:
        _plan_and_preprocess(env)
    # augmentation in the main process: 2 shared cores
    os.environ["nnUNet_n_proc_DA"] = "0"  # noqa: SIM112 (nnU-Net's own variable)
    for fold in args.folds:
        folder = _train(out / "nnUNet_preprocessed" / DATASET, fold, args.iterations)
    print(folder)
    return 0


def _plan_and_preprocess(env: dict[str, str]) -> None:
    subprocess.run(
        [Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID),
         "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--verify_dataset_integrity"],
        check=True, env={**os.environ, **env},
    )  # fmt: skip


def _write_raw(root: Path, cases: int, edge: int) -> None:
    import tifffile

    from runtime.samples.synthetic import synthetic_volume

    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    for index in range(cases):
        case = f"surface_{index:03d}"
        sample = synthetic_volume((edge, edge, edge), seed=100 + index)
        tifffile.imwrite(root / "imagesTr" / f"{case}_0000.tif", sample.image)
        tifffile.imwrite(root / "labelsTr" / f"{case}.tif", sample.label)
        # Tiff3DIO's spacing sidecars are named after the case, without the channel suffix.
        for path in (root / "imagesTr" / f"{case}.json", root / "labelsTr" / f"{case}.json"):
            path.write_text(json.dumps({"spacing": [1.0, 1.0, 1.0]}))
    dataset = {
        "channel_names": {"0": "papyrus"},  # not "CT": that name would select CTNormalization
        "labels": {"background": 0, "surface": 1, "ignore": 2},
        "numTraining": cases,
        "file_ending": ".tif",
        "overwrite_image_reader_writer": "Tiff3DIO",
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2))


def _train(preprocessed: Path, fold: int, iterations: int) -> Path:
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerTiny(nnUNetTrainer):
        # nnU-Net records its __init__ arguments by name: the signature must be spelled out.
        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = 1
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = 2

    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # what nnUNetv2_train passes through the plans
    dataset = json.loads((preprocessed / "dataset.json").read_text())
    torch.set_num_threads(2)
    trainer = nnUNetTrainerTiny(plans, "3d_fullres", fold, dataset, device=torch.device("cpu"))
    trainer.run_training()
    return Path(trainer.output_folder).parent


if __name__ == "__main__":
    raise SystemExit(main())
