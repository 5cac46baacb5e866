"""frn-det's research tooling, apart from the library a detectron2 user imports (frn_det):
sweeps of training runs and their summaries (``sweep``, ``summarize``; on Slurm,
``slurm``), the run folders they lay out and read (``run_folders``), the batch-dependence
report (``batch_dependence``), benchmarks (``benchmark``), catalog entries from sweep runs
and MODEL_ZOO.md (``model_zoo``), the evaluation of catalog entries (``eval_zoo``), the
batch-independence table (``batch_leak``), the CUDA check (``cuda_check``), drawn
predictions (``visualization``), synthetic COCO results for timing the evaluation backends
(``synthetic``) and the Markdown tables of their reports (``markdown``). The scripts in
tools/ are their command lines.
"""
