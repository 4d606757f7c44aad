"""Run a real federation on loopback with the commands docs/deployment.md documents.

The commands come from the fenced blocks of docs/deployment.md whose info string names a
``deploy:`` step (```` ```bash deploy:superlink ````): the harness replaces the documented
placeholders, splits each command with ``shlex`` and runs it, so a docs change changes what the
tests run. Three security modes pick the blocks:

    mode        SuperLink               SuperNode               config.toml
    insecure    deploy:superlink        deploy:supernode        deploy:config
    tls         deploy:superlink-tls    deploy:supernode-tls    deploy:config-tls
    auth        deploy:superlink-auth   deploy:supernode-auth   deploy:config-tls (+ register)

API:

    run_federation(workdir, node_configs, run_config, *, mode="insecure",
                   unregistered_node_configs=(), timeout=300.0, prepare=None) -> RunResult
        Start a SuperLink and one SuperNode per node config, submit the run, wait for its
        final status and stop every process; RunResult(status, run_id, log, refused).
    Federation(workdir, mode="insecure")   context manager for finer steps:
        start_superlink(); register(key) -> str; start_supernode(node_config, key=None);
        submit(run_config) -> str; wait(run_id, timeout) -> str; logs(run_id) -> str; stop()
    make_certificates(certs_dir, hosts)    a CA and a server certificate for ``hosts``
    make_node_key(path)                    a SuperNode key pair (``path``, ``path.pub``)
    documented_command(step, **values)     one documented command, placeholders replaced
    documented_lines(step, **values)       a block's lines (deploy:node-configs: one per device)
    Federation.run_documented(step, **values), Federation.details(run_id)
                                           another documented step (deploy:device-data);
                                           a run's status-details (why it failed)

Every process the harness starts runs in its own session; ``stop`` terminates, then kills, each
one's process tree and asserts that none is left. Processes it did not start are never touched.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e_helpers import BIN, REPO, free_port

DOCS = REPO / "docs" / "deployment.md"
Mode = Literal["insecure", "tls", "auth"]
MODES: tuple[str, ...] = ("insecure", "tls", "auth")
PLACEHOLDERS = (
    "SERVER",
    "PORT",
    "NODE_PORT",
    "NODE_CONFIG",
    "RUN_CONFIG",
    "RUN_ID",
    "CERTS_DIR",
    "KEY",
    "DATA_DIR",
)
_PLACEHOLDER = re.compile(r"\b(" + "|".join(sorted(PLACEHOLDERS, key=len, reverse=True)) + r")\b")
_BLOCK = re.compile(r"^```\w*[ \t]+deploy:([\w-]+)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_STEPS = {
    "insecure": ("superlink", "supernode", "config"),
    "tls": ("superlink-tls", "supernode-tls", "config-tls"),
    "auth": ("superlink-auth", "supernode-auth", "config-tls"),
}
SERVER = "127.0.0.1"


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its final status, ID, ``flwr log`` text, and refused SuperNodes' logs."""

    status: str
    run_id: str
    log: str
    refused: list[str]


def documented_blocks(docs: Path = DOCS) -> dict[str, str]:
    """The ``deploy:`` blocks of ``docs`` by step name; a step documented twice is an error."""
    blocks: dict[str, str] = {}
    for step, body in _BLOCK.findall(docs.read_text()):
        if step in blocks:
            raise ValueError(f"{docs}: block deploy:{step} appears twice; one per step")
        blocks[step] = body
    return blocks


def _replace(text: str, values: dict[str, str]) -> str:
    """Replace the placeholders in ``text``; a placeholder without a value is an error."""

    def value(match: re.Match) -> str:
        if match[1] not in values:
            raise ValueError(f"placeholder {match[1]} has no value; given: {sorted(values)}")
        return values[match[1]]

    return _PLACEHOLDER.sub(value, text)


def documented_command(step: str, docs: Path = DOCS, **values: str) -> list[str]:
    """The command of block ``deploy:step`` as an argv, placeholders replaced token by token."""
    blocks = documented_blocks(docs)
    if step not in blocks:
        raise ValueError(f"{docs} has no block deploy:{step}; it has {sorted(blocks)}")
    argv = shlex.split(blocks[step].replace("\\\n", " "), comments=True)
    if not argv:
        raise ValueError(f"{docs}: block deploy:{step} holds no command")
    return [_replace(token, values) for token in argv]


def documented_config(step: str, docs: Path = DOCS, **values: str) -> str:
    """The TOML text of block ``deploy:step`` with placeholders replaced."""
    blocks = documented_blocks(docs)
    if step not in blocks:
        raise ValueError(f"{docs} has no block deploy:{step}; it has {sorted(blocks)}")
    return _replace(blocks[step], values)


def documented_lines(step: str, docs: Path = DOCS, **values: str) -> list[str]:
    """The non-empty lines of block ``deploy:step`` (e.g. one node config per device),
    placeholders replaced."""
    return [
        line.strip()
        for line in documented_config(step, docs, **values).splitlines()
        if line.strip()
    ]


def make_certificates(certs_dir: Path, hosts: tuple[str, ...] = (SERVER, "localhost")) -> Path:
    """Write ``ca.crt``, ``server.pem``, ``server.key``: a CA and a server cert for ``hosts``."""
    certs_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedqdnn test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (certs_dir / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (certs_dir / "server.pem").write_bytes(server_cert.public_bytes(pem))
    (certs_dir / "server.key").write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return certs_dir


def make_node_key(path: Path) -> Path:
    """Write a P-384 SuperNode key pair in OpenSSH format (``ssh-keygen -t ecdsa -b 384``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    Path(f"{path}.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return path


def _json_of(text: str) -> dict:
    """The JSON object a ``flwr ... --format json`` command printed (after any log lines)."""
    try:
        return json.loads(text[text.index("{") :])
    except ValueError as err:
        raise AssertionError(f"no JSON in the output:\n{text[-3000:]}") from err


class Federation:
    """A SuperLink, its SuperNodes and a Flower config file, all under ``workdir``."""

    def __init__(self, workdir: Path, mode: Mode = "insecure", docs: Path = DOCS):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.workdir, self.mode, self.docs = workdir, mode, docs
        self.home = workdir / "flwr-home"
        self.logs_dir = workdir / "logs"
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.values = {"SERVER": SERVER, "PORT": str(free_port())}
        if mode != "insecure":
            self.values["CERTS_DIR"] = str(make_certificates(workdir / "certs"))
        self.env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(self.home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        }
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self.supernodes = 0
        self.superlink_step, self.supernode_step, config_step = _STEPS[mode]
        config = documented_config(config_step, docs, **self.values)
        (self.home / "config.toml").write_text(config)

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        """Start ``argv`` in its own session, output to ``logs/name.log``."""
        log_path = self.logs_dir / f"{name}.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((proc, log_path))
        return proc

    def _cli(self, step: str, timeout: float = 120, **values: str) -> tuple[int, str]:
        """Run the documented command of ``step`` (``flwr``, ``python -m ...``) to completion."""
        argv = documented_command(step, self.docs, **self.values, **values)
        try:
            done = subprocess.run(
                argv,
                cwd=REPO,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"timed out after {timeout}s: {argv}") from err
        return done.returncode, done.stdout + done.stderr

    def start_superlink(self, ready_timeout: float = 60) -> subprocess.Popen:
        """Start the SuperLink and wait until its port accepts connections."""
        proc = self._start(
            "superlink", documented_command(self.superlink_step, self.docs, **self.values)
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"SuperLink exited with {proc.returncode}:\n{self.tail(proc)}")
            try:
                with socket.create_connection((SERVER, int(self.values["PORT"])), timeout=1):
                    return proc
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"SuperLink not listening after {ready_timeout}s:\n{self.tail(proc)}")

    def register(self, key: Path) -> str:
        """Register the public key ``key.pub`` with the SuperLink; returns the node ID."""
        code, out = self._cli("register", KEY=str(key))
        result = _json_of(out)
        if code != 0 or not result.get("success"):
            raise AssertionError(f"registering {key}.pub failed ({code}):\n{out[-3000:]}")
        return str(result["node-id"])

    def start_supernode(self, node_config: str, key: Path | None = None) -> subprocess.Popen:
        """Start one SuperNode with its own local port; ``key`` is needed in auth mode."""
        if (key is None) == (self.mode == "auth"):
            raise ValueError(f"mode {self.mode!r}: a SuperNode key is needed exactly in auth mode")
        values = {**self.values, "NODE_PORT": str(free_port()), "NODE_CONFIG": node_config}
        if key is not None:
            values["KEY"] = str(key)
        argv = documented_command(self.supernode_step, self.docs, **values)
        self.supernodes += 1
        return self._start(f"supernode-{self.supernodes - 1}", argv)

    def run_documented(self, step: str, timeout: float = 300, **values: str) -> str:
        """Run the documented command of ``step`` (e.g. preparing data) to completion; its
        output, or AssertionError with it when it fails."""
        code, out = self._cli(step, timeout, **values)
        if code != 0:
            raise AssertionError(f"deploy:{step} failed ({code}):\n{out[-3000:]}")
        return out

    def details(self, run_id: str) -> str:
        """The run's ``status-details`` as ``flwr ls`` shows them (why a run failed)."""
        code, out = self._cli("status", RUN_ID=run_id)
        if code != 0:
            raise AssertionError(f"flwr ls failed ({code}):\n{out[-3000:]}")
        return str(_json_of(out)["runs"][0].get("status-details", ""))

    def submit(self, run_config: str) -> str:
        """Submit the run with ``flwr run``; returns its run ID."""
        code, out = self._cli("run", RUN_CONFIG=run_config)
        submitted = _json_of(out)
        if code != 0 or not submitted.get("success"):
            raise AssertionError(f"flwr run failed ({code}):\n{out[-3000:]}")
        return str(submitted["run-id"])

    def wait(self, run_id: str, timeout: float = 300, poll: float = 2) -> str:
        """Poll ``flwr ls`` until the run's status starts with ``finished``; returns it."""
        status, deadline = "", time.monotonic() + timeout
        while time.monotonic() < deadline:
            code, out = self._cli("status", RUN_ID=run_id)
            if code != 0:
                raise AssertionError(f"flwr ls failed ({code}):\n{out[-3000:]}")
            status = _json_of(out)["runs"][0]["status"]
            if status.startswith("finished"):
                return status
            time.sleep(poll)
        raise AssertionError(f"run {run_id} not finished after {timeout}s (status {status!r})")

    def logs(self, run_id: str) -> str:
        """The run's logs as ``flwr log --show`` prints them."""
        code, out = self._cli("log", RUN_ID=run_id)
        if code != 0:
            raise AssertionError(f"flwr log failed ({code}):\n{out[-3000:]}")
        return out

    def tail(self, proc: subprocess.Popen, chars: int = 3000) -> str:
        """The end of a started process's output."""
        path = next(path for started, path in self.procs if started is proc)
        return path.read_text(errors="replace")[-chars:]

    def stop(self, grace: float = 10) -> None:
        """Terminate, then kill, the process tree of everything started; assert none is left."""
        sessions = {proc.pid for proc, _ in self.procs}
        tree: list[psutil.Process] = []
        for proc, _ in self.procs:
            try:
                root = psutil.Process(proc.pid)
                tree += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        sessions |= {_session_of(p) for p in tree} - {None}  # SuperExec starts its own session
        tree += [p for p in psutil.process_iter() if _session_of(p) in sessions]
        for p in tree:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=grace)
        for proc, _ in self.procs:
            proc.wait(timeout=grace)  # reap our direct children
        left = [p.pid for p in psutil.process_iter() if _session_of(p) in sessions and _alive(p)]
        left += [p.pid for p in tree if _alive(p)]
        assert not left, f"processes left after stop: {sorted(set(left))}"


def _alive(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs (a zombie does not)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _session_of(proc: psutil.Process) -> int | None:
    """The session ID of ``proc`` (None when it is gone or not ours to read)."""
    try:
        return os.getsid(proc.pid)
    except (ProcessLookupError, PermissionError):
        return None


def run_federation(
    workdir: Path,
    node_configs: list[str],
    run_config: str,
    *,
    mode: Mode = "insecure",
    unregistered_node_configs: tuple[str, ...] = (),
    timeout: float = 300,
    prepare: dict[str, dict[str, str]] | None = None,
) -> RunResult:
    """Run one federation end to end; every process is stopped before this returns.

    In auth mode each SuperNode of ``node_configs`` gets a registered key and each of
    ``unregistered_node_configs`` an unregistered one; those must be refused (exit non-zero)
    and their output is returned in ``RunResult.refused``. ``prepare``: documented steps to
    run first (step -> placeholder values), e.g. ``{"device-data": {"DATA_DIR": ...}}``.
    """
    if unregistered_node_configs and mode != "auth":
        raise ValueError(f"unregistered SuperNodes need mode 'auth', not {mode!r}")
    with Federation(workdir, mode) as fed:
        for step, values in (prepare or {}).items():  # e.g. deploy:device-data
            fed.run_documented(step, **values)
        fed.start_superlink()
        refused_procs = []
        for k, node_config in enumerate(node_configs):
            key = None
            if mode == "auth":
                key = make_node_key(workdir / "keys" / f"node-{k}")
                fed.register(key)
            fed.start_supernode(node_config, key)
        for k, node_config in enumerate(unregistered_node_configs):
            key = make_node_key(workdir / "keys" / f"unregistered-{k}")
            refused_procs.append(fed.start_supernode(node_config, key))
        run_id = fed.submit(run_config)
        status = fed.wait(run_id, timeout)
        log = fed.logs(run_id)
        refused = []
        for proc in refused_procs:
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired as err:
                raise AssertionError(
                    f"unregistered SuperNode still runs:\n{fed.tail(proc)}"
                ) from err
            if code == 0:
                raise AssertionError(f"unregistered SuperNode exited 0:\n{fed.tail(proc)}")
            refused.append(fed.tail(proc, chars=20000))
        return RunResult(status=status, run_id=run_id, log=log, refused=refused)
