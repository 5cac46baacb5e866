# The README's commands. Each target creates .venv and installs everything it needs when
# .venv is missing or older than the files that describe the environment.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.frn-det-installed
PIP := $(PY) -m pip install --disable-pip-version-check -c constraints.txt

.PHONY: env demo test lint bench clean-env

env: $(STAMP)

# torch 2.14.1 from PyPI is its CUDA build: the environment takes about 5.6 GB. Check the
# space first, so a full disk is said plainly before anything is installed.
ENV_NEED_MB ?= 6500

$(STAMP): pyproject.toml constraints.txt tools/install_detectron2.py
	@free=$$(df -Pm . | awk 'NR==2 {print $$4}'); \
	if [ -n "$$free" ] && [ "$$free" -lt $(ENV_NEED_MB) ] && [ ! -x $(PY) ]; then \
	  echo "make: $(VENV) needs about $(ENV_NEED_MB) MB (torch 2.14.1's CUDA build and the rest); $$free MB are free on $$(df -Pm . | awk 'NR==2 {print $$6}'). Free some space or set ENV_NEED_MB." >&2; \
	  exit 1; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.14.1 torchvision==0.29.1 numpy setuptools
	$(PIP) --no-build-isolation -e '.[test]'
	$(PY) tools/install_detectron2.py
	touch $@

# The main job: train FRN Mask R-CNN on the embedded shapes dataset and evaluate it, then
# draw its predictions on val images beside the ground truth (the sheet's path is printed).
demo: $(STAMP)
	$(PY) tools/train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_frn.yaml \
		OUTPUT_DIR output/demo_frn
	$(PY) tools/visualize.py output/demo_frn --num-images 4 --transpose

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) tools/benchmark_norm.py

clean-env:
	rm -rf $(VENV)

# The prepared CUDA check (issue 14): tools/cuda_check.py, results in docs/cuda/. It builds
# no .venv: on a GPU machine give that machine's Python, e.g. make cuda-check CUDA_PYTHON=python3
CUDA_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
.PHONY: cuda-check
cuda-check:
	$(CUDA_PYTHON) -m frn_det_tools.cuda_check $(CUDA_CHECK_ARGS)

# The sweep on a real single-node Slurm (issue 15, docs/slurm.md): as root, installs Debian's
# slurm-wlm and munge when missing, starts slurmctld + slurmd with configs in a temp folder
# (dev/slurm/start.sh), runs tests/sweep/test_slurm_cluster.py on it and stops it. Minutes
# long; not part of make test.
.PHONY: slurm-check
slurm-check: $(STAMP)
	bash dev/slurm/check.sh
