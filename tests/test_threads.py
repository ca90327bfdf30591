"""--omp-nthreads changes the speed of the participant level, not its numbers."""

from __future__ import annotations

from datasets import make_dataset

from bids_ketamine_fc.cli.run import main


def test_outputs_do_not_depend_on_the_number_of_threads(tmp_path):
    """The small (T x T) algebra runs on one BLAS thread, the large products on ``--omp-nthreads``.

    Before, OpenBLAS shared the SVDs of the 300 x 300 cleaning operator among the threads, and the
    maps differed by ~1e-5 and the reduced data changed sign between 1 and 2 threads.
    """
    bids = make_dataset(tmp_path, subjects=("01",), n_volumes=300)
    outputs = {}
    for threads in (1, 2):
        out = tmp_path / f"out{threads}"
        args = [bids, out, "participant", "-w", tmp_path / f"work{threads}", "--seeds",
                tmp_path / "seeds.json", "--omp-nthreads", threads]  # fmt: skip
        assert main([str(a) for a in args]) == 0
        files = sorted((out / "sub-01").rglob("*.*"))
        outputs[threads] = {str(f.relative_to(out)): f.read_bytes() for f in files}
    assert sum(name.endswith("_boldmap.nii.gz") for name in outputs[1]) == 2
    assert outputs[1] == outputs[2]
