# The two set-up commands: `make run` (the portal on http://127.0.0.1:5000) and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
PORTAL := $(VENV)/bin/portal
PYTHON ?= python3
comma  := ,

AXE    := tests/browser/node_modules/axe-core/axe.min.js

.PHONY: run test install browser postgres nginx redis pdftools wrk topology bench clean messages screenshots front-desk-screenshots

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(PORTAL) db upgrade
	$(PORTAL) demo
	@echo ""
	@echo "  Portal: http://127.0.0.1:5000  (admin@demo.test / staff@demo.test, password demo-pass-123)"
	@echo ""
	$(PORTAL) serve --host 127.0.0.1 --port 5000 --with-worker

# $(call apt_install,packages,what they are for,what happens without them): Debian's packages
# when this runs as root with apt-get (a fresh CI machine), else the consequence is said.
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's $(1) for $(2)..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	  else \
	    echo "$(3)"; \
	  fi

# Debian's Chromium for the browser tests (Playwright cannot download its own browser here),
# and Noto fonts so that Hindi, Tamil, Telugu, Bengali, Marathi, Arabic and Chinese pages
# render real glyphs in the accessibility checks and screenshots.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  $(call apt_install,chromium,the browser tests,No /usr/bin/chromium: browser tests will use Playwright's own browser if installed.); \
	fi
	@if ! fc-list 2>/dev/null | grep -q NotoSansCJK || ! fc-list 2>/dev/null | grep -q NotoSansDevanagari; then \
	  $(call apt_install,fonts-noto-core fonts-noto-cjk,the browser tests,No Noto fonts: pages in Indic scripts$(comma) Arabic and Chinese may show boxes in screenshots.); \
	fi

# axe-core for the accessibility checks, pinned by tests/browser/package-lock.json.
$(AXE): tests/browser/package.json tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund --silent
	touch $@

# PostgreSQL on 127.0.0.1:5432 for the concurrency tests; started when it is down.
postgres:
	@if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  if command -v pg_ctlcluster >/dev/null; then \
	    echo "Starting PostgreSQL..."; \
	    pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | sort -V | tail -n 1) main start; \
	    for i in 1 2 3 4 5 6 7 8 9 10; do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	  fi; \
	fi

# Debian's nginx for the deploy and topology tests (they run it from a temporary folder, as
# their own non-daemon process, never the system's service).
nginx:
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
	  $(call apt_install,nginx,the topology test,No nginx: the deploy and topology tests will skip (or fail where CI is set).); \
	fi

# poppler's pdftotext reads the receipt PDFs back in the tests as a PDF reader shows them
# (pypdf alone extracts Devanagari syllables out of order).
pdftools:
	@if ! command -v pdftotext >/dev/null; then \
	  $(call apt_install,poppler-utils,the receipt PDF tests,No pdftotext: the receipt PDF tests read the PDFs with pypdf.); \
	fi

# wrk drives the HTTP benchmarks.
wrk:
	@if ! command -v wrk >/dev/null; then \
	  $(call apt_install,wrk,the benchmarks,No wrk: bench/http_bench.py cannot run.); \
	fi

# Redis on 127.0.0.1:6379 for the topology test (shared rate limits); started when it is down.
redis:
	@if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1); then \
	  if ! command -v redis-server >/dev/null; then \
	    $(call apt_install,redis-server,the topology test,No redis-server: the topology test will skip (or fail where CI is set).); \
	  fi; \
	  if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then \
	    echo "Starting Redis..."; \
	    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' >/dev/null; \
	    for i in 1 2 3 4 5; do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 1; done; \
	  fi; \
	fi

# The multi-node test alone, with its summary of what happened when a node stopped.
topology: install nginx postgres redis
	$(PY) -m pytest -p no:cacheprovider -q -s tests/topology tests/deploy

# One pytest worker per core; each test file stays on one worker, so its module-scoped fixtures
# (a PostgreSQL database, localstripe) are set up once. `make test PYTEST_WORKERS=0`: no workers.
PYTEST_WORKERS ?= auto

# Import contracts and types first (pyproject.toml: [tool.importlinter], [tool.mypy]).
test: install browser $(AXE) postgres nginx redis pdftools
	$(PY) -m bandit -q -c pyproject.toml -r portal gateways
	$(VENV)/bin/lint-imports
	$(PY) -m mypy gateways portal/services portal/worker
	mkdir -p reports
	$(PY) -m pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile \
	  --junitxml=reports/junit.xml $(PYTEST_ARGS)

# After changing a patient-facing text: refresh translations/messages.pot and every catalog
# (new texts arrive untranslated; the catalog test fails until they are translated). Catalogs
# are compiled in memory when the app starts, so there is no compile step and no .mo in git.
messages: install
	$(PY) -m portal.catalogs

# The README's pay-page pictures in Hindi, Arabic and Chinese (docs/pay-page-<code>.png).
screenshots: install browser $(AXE)
	PORTAL_SCREENSHOTS=1 $(PY) -m pytest -p no:cacheprovider -q tests/browser/test_languages.py -k screenshots
	PORTAL_SCREENSHOTS=1 $(PY) -m pytest -p no:cacheprovider -q tests/browser/test_receipts.py -k printable

# Issue 13's closing note: docs/front-desk/after-*.png (the link page, receipt and dashboard at
# phone and desktop width); PORTAL_FRONT_DESK_SCREENSHOTS=before made the before-*.png on old code.
front-desk-screenshots: install browser $(AXE)
	PORTAL_FRONT_DESK_SCREENSHOTS=after $(PY) -m pytest -p no:cacheprovider -q tests/browser/test_screenshots.py

# Speed (issue 14): ratios to a bare Flask hello measured in the same run, on SQLite and
# PostgreSQL; needs wrk (apt-get install wrk). Each script prints what it measured.
bench: install postgres wrk
	$(PY) bench/http_bench.py
	$(PY) bench/outbox_email.py
	$(PY) bench/transactions.py --db sqlite --repeat 5
	$(PY) bench/transactions.py --db postgres --repeat 5
	$(PY) bench/pay_page.py

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache tests/browser/node_modules
