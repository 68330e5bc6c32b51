"""A real-browser check of the Prefect and MLflow UIs, as a researcher uses them.

    PYTHONPATH=$PWD .venv/bin/python -m tests.support.browser_check --out browser-shots

Starts a Prefect server (with its UI) and a worker on 127.0.0.1, deploys `azr-train` from a copy
of the repository, and opens the deployment's custom run form in headless Chromium (Debian's
`chromium`, driven over the DevTools protocol). It checks that the form shows the deployment's
preset and empty changes, submits the form untouched (to a paused pool, so nothing trains) and
checks that the run it would start is the preset as it stands. Then it trains the tiny preset
for one iteration on the worker, with the MLflow UI running (infra/start-mlflow-ui.sh), and
saves screenshots of the form, the finished run's artifacts and the MLflow run page. Everything
it started is stopped by process id. About 4 minutes on 2 idle cores; exit code 0 when every
check passed. Needs `apt-get install -y chromium fonts-dejavu-core`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.prefect_local import ROOT, LocalPrefect, free_port, processes_with_marker
from tests.e2e.test_deployment import _flow_run_id, copy_repository

POOL = "azr-browser-check"
WIDTH, HEIGHT = 1500, 1300


class Browser:
    """Headless Chromium and one page, spoken to over the DevTools protocol."""

    def __init__(self, profile: Path, log: Path) -> None:
        self.port = free_port()
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise SystemExit("chromium is not installed: apt-get install -y chromium fonts-dejavu-core")
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
             f"--remote-debugging-port={self.port}", f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as response:
                    pages = [t for t in json.load(response) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"chromium did not start (log {log})")
            time.sleep(0.3)
        from websockets.sync.client import connect

        self.socket = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 2**20)
        self.next_id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=120))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, wait_for_text: str, timeout: float = 90) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(wait_for_text, timeout)

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while text not in (self.js("document.body ? document.body.innerText : ''") or ""):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared on {self.js('location.href')}")
            time.sleep(0.5)
        time.sleep(1.5)  # let the page settle (fonts, charts)

    def click_text(self, text: str, selector: str = "button, a, [role=tab], [role=button], summary, label") -> None:
        found = self.js(f"""(() => {{
            const hits = [...document.querySelectorAll({json.dumps(selector)})]
              .filter(e => e.innerText && e.innerText.trim().split(/\s+/).slice(0, {len(text.split())}).join(' ') === {json.dumps(text)})
              .sort((a, b) => a.innerText.length - b.innerText.length);
            if (!hits.length) return false;
            hits[0].scrollIntoView({{block: 'center'}}); hits[0].click(); return true; }})()""")
        if not found:
            raise AssertionError(f"nothing to click named {text!r} on {self.js('location.href')}")
        time.sleep(1.0)

    def screenshot(self, path: Path, full_page: bool = True, max_height: int = 7000) -> None:
        """A PNG of the page; `full_page` grows the viewport to the tallest scrolling content (the
        Prefect UI scrolls inside an inner element, which a plain full-page capture would cut)."""
        height = HEIGHT
        if full_page:
            height = min(max_height, max(HEIGHT, int(self.js(
                "Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight))") or HEIGHT)))
            self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1, mobile=False)
            time.sleep(1.5)
        try:
            path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        finally:
            if full_page:
                self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
        print(f"  screenshot {path} ({WIDTH}x{height})")

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)


def _start_mlflow_ui(state: Path, store: Path, env: dict[str, str]) -> str:
    port = free_port()
    env = {**env, "AZR_STATE_DIR": str(state), "AZR_MLFLOW_PORT": str(port)}
    subprocess.run([str(ROOT / "infra" / "start-mlflow-ui.sh"), str(store)], env=env, check=True, timeout=240,
                   stdout=sys.stdout, stderr=sys.stderr)
    return f"http://127.0.0.1:{port}"


def _stop_mlflow_ui(state: Path, env: dict[str, str]) -> None:
    subprocess.run([str(ROOT / "infra" / "stop.sh"), "mlflow"], env={**env, "AZR_STATE_DIR": str(state)},
                   check=False, timeout=120)


def main() -> int:  # noqa: PLR0915 - one scripted walk through both UIs
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("browser-shots"), help="where the screenshots go")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="azr-browser-"))
    repo, runs, state = work / "repo", work / "runs", work / "state"
    copy_repository(repo)
    runs.mkdir()
    prefect = LocalPrefect(work / "prefect-home", out / "logs", ui=True)
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(("  ok    " if ok else "  FAIL  ") + what)
        if not ok:
            failures.append(what)

    browser = None
    env = prefect.env({"AZR_PROJECT_DIR": str(repo), "AZR_STATE_DIR": str(state), "PREFECT_WORKER_QUERY_SECONDS": "1"})
    try:
        prefect.start()
        print(f"Prefect UI {prefect.url}")
        prefect.cli("work-pool", "create", POOL, "--type", "process")
        prefect.cli("deploy", "--name", "azr-train", "--pool", POOL, cwd=repo, timeout=300)
        mlflow_url = _start_mlflow_ui(state, runs / "mlflow.db", env)
        print(f"MLflow UI {mlflow_url}")
        prefect.start_worker(POOL, cwd=repo, env={k: env[k] for k in ("AZR_PROJECT_DIR", "AZR_STATE_DIR", "PREFECT_WORKER_QUERY_SECONDS")})
        prefect.cli("work-pool", "pause", POOL)  # the untouched form's run must not train

        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from azr.config.loading import build_config
        from flows.training import resolve_run_config

        with temporary_settings(updates={PREFECT_API_URL: prefect.api_url}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("azr-train/azr-train")
            browser = Browser(work / "chromium-profile", out / "logs" / "chromium.log")

            # 1. The custom run form shows the preset and empty changes, and submits them.
            browser.open(f"{prefect.url}/deployments/deployment/{deployment.id}/run", "Preset")
            text = browser.js("document.body.innerText")
            (out / "form.txt").write_text(text)
            browser.screenshot(out / "1-custom-run-form-top.png", full_page=False)
            browser.screenshot(out / "1-custom-run-form.png")
            check("Changes to the preset" in text, "the form has the changes section")
            check("Laptop run" in text, "the preset's description says what each preset is for")
            shown = browser.js("""[...document.querySelectorAll('input, select, textarea, button[role=combobox], [role=combobox]')]
                .map(e => [e.getAttribute('aria-label') || e.name || e.id || '', e.value || e.innerText || ''])""")
            (out / "form-fields.json").write_text(json.dumps(shown, indent=1))
            check(any(value.strip() == "cpu" for _, value in shown), "the preset field shows cpu")
            before = {r.id for r in client.read_flow_runs()}
            for attempt in range(3):  # a busy machine's API can time out under the UI: try again
                browser.click_text("Submit")
                deadline = time.monotonic() + 90
                while not (created := [r for r in client.read_flow_runs() if r.id not in before]):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(1)
                if created:
                    break
                print(f"  submit attempt {attempt + 1} created no flow run; the page says: "
                      f"{browser.js('document.body.innerText').splitlines()[-8:]}")
                if "Submit" not in browser.js("document.body.innerText"):
                    browser.open(f"{prefect.url}/deployments/deployment/{deployment.id}/run", "Preset")
            else:
                raise AssertionError("submitting the form created no flow run")
            submitted = created[0].parameters
            (out / "submitted-parameters.json").write_text(json.dumps(submitted, indent=1, default=str))
            print(f"  submitted parameters: {json.dumps(submitted, default=str)[:400]}")
            check(submitted.get("preset") == "cpu", "the untouched form submits preset cpu")
            check(submitted.get("config") is None, "the untouched form submits no full config")
            resolved = resolve_run_config(submitted.get("preset"), submitted.get("overrides") or [], None, None,
                                          submitted.get("changes"))
            check(resolved == build_config("cpu"), "the submitted run is exactly the cpu preset")
            client.delete_flow_run(created[0].id)
            prefect.cli("work-pool", "resume", POOL)

            # 2. A finished run's artifacts (tiny preset, one iteration, on the worker).
            run_dir = runs / "tiny-browser"
            started = _flow_run_id(prefect.cli(
                "deployment", "run", "azr-train/azr-train", "--param", "preset=tiny",
                "--param", 'changes={"trainer": {"iterations": 1}}', "--param", f"run_dir={run_dir}", cwd=repo))
            deadline = time.monotonic() + 900
            while not (flow_run := client.read_flow_run(started)).state.is_final():
                if time.monotonic() > deadline:
                    raise AssertionError(f"the tiny run did not finish:\n{prefect.log_tail(f'worker-{POOL}', 60)}")
                time.sleep(2)
            check(flow_run.state.is_completed(), f"the tiny run finished ({flow_run.state_name})")
            check(flow_run.name == run_dir.name, f"the flow run is named after the training run ({flow_run.name})")
            browser.open(f"{prefect.url}/runs/flow-run/{started}", run_dir.name)
            browser.click_text("Artifacts", "[role=tab], button, a, li, span, div")
            browser.screenshot(out / "2-flow-run-artifacts.png")
            table = next(a for a in client.read_artifacts() if a.key == f"azr-{run_dir.name}-iterations")
            browser.open(f"{prefect.url}/artifacts/artifact/{table.id}", "valid proposals")
            browser.screenshot(out / "2b-iteration-table.png")
            browser.open(f"{prefect.url}/runs/flow-run/{started}", "Subflow Runs")
            browser.screenshot(out / "3-flow-run-page.png")
            browser.open(f"{prefect.url}/artifacts", f"azr-{run_dir.name}-iterations")
            browser.screenshot(out / "4-artifacts-page.png")
            link = next((a for a in client.read_artifacts() if a.key == f"azr-{run_dir.name}-mlflow"), None)
            check(link is not None and f"({mlflow_url}/#/experiments/" in str(link.data),
                  f"the MLflow artifact is a link into the MLflow UI ({link.data if link else None})")

            # 3. The MLflow run page: description, headline metrics first, link back to Prefect.
            info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
            import mlflow

            tracking = mlflow.MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
            mlrun = tracking.get_run(info.get("mlflow_run_id") or tracking.search_runs(
                [tracking.get_experiment_by_name("azr-tiny").experiment_id])[0].info.run_id)
            experiment = mlrun.info.experiment_id
            check("Prefect flow run" in mlrun.data.tags.get("mlflow.note.content", ""), "the MLflow run links the Prefect run")
            browser.open(f"{mlflow_url}/#/experiments/{experiment}/runs/{mlrun.info.run_id}", run_dir.name)
            browser.screenshot(out / "5-mlflow-run-page.png")
            browser.open(f"{mlflow_url}/#/experiments/{experiment}/runs/{mlrun.info.run_id}/model-metrics", "Headline")
            browser.screenshot(out / "6-mlflow-run-metrics.png", full_page=False)
            page = browser.js("document.body.innerText")
            check(-1 < page.find("Headline") < page.find("abduction_propose"), "the headline charts come first")
            browser.open(f"{mlflow_url}/#/experiments/{experiment}", "azr-tiny")
            browser.screenshot(out / "7-mlflow-experiment.png", full_page=False)
    except Exception as exc:  # noqa: BLE001 - record what the page showed, then report
        failures.append(f"{type(exc).__name__}: {exc}")
        if browser is not None:
            browser.screenshot(out / "error.png")
            (out / "error.txt").write_text(browser.js("location.href + '\\n' + document.body.innerText") or "")
    finally:
        if browser is not None:
            browser.close()
        _stop_mlflow_ui(state, env)
        killed = prefect.stop()
        leftovers = processes_with_marker(prefect.marker)
        if killed or leftovers:
            failures.append(f"processes killed {killed}, left running {leftovers}")
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + ("all checks passed" if not failures else f"{len(failures)} check(s) failed: " + "; ".join(failures)))
    print(f"screenshots in {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
