# The two commands of the README: `make demo` (the main job) and `make test`. Both set up what they need.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench clean

setup:
	@scripts/setup_env.sh

demo: setup
	@$(VENV)/bin/h1-training demo

# pytest exits 5 when it collected no test: that is a failure here, never a green run.
test: setup
	@$(PY) -m ruff check src test launch
	@cd foxglove_panels && npx --no-install tsc --noEmit && npx --no-install vitest run
	@cd web_ui && npx --no-install tsc --noEmit
	@set +e; $(PY) -m pytest test $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests - failing"; exit 1; fi; exit $$rc

lint: setup
	@$(PY) -m ruff check src test launch

bench: setup
	@$(VENV)/bin/h1-training bench all

clean:
	rm -rf build $(VENV) foxglove_panels/node_modules web_ui/node_modules src/h1_training/web/static/app.js \
	  src/h1_training/web/static/app.css
