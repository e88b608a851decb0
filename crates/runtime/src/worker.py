# The agentvault function worker. One process serves one agent: the server starts it with a
# cleared environment (inside bubblewrap when available) and talks to it over stdin/stdout with
# frames of a 4-byte big-endian length and a JSON document. The worker holds no credential:
# conv.utils.get_secret is a request on the pipe, answered by the server for this pipe's agent.
#
# server -> worker: {"t": "invoke", "id", ...} and {"t": "secret", "id", ...} (the answer to get_secret)
# worker -> server: {"t": "ready"}, {"t": "get_secret", "id", "name"} and {"t": "done", "id", ...}
# Every message after "ready" carries the invocation's id; the server stops a worker that sends
# a message for another id, or anything while no invocation of its own is running.
#
# Network: in the sandbox the worker has a network namespace of its own with only a loopback
# interface. Its one way out is agentvault's egress proxy, reached through a Unix socket bound
# into the sandbox (its path and the relay's port are the worker's arguments); the relay below listens on the private loopback and
# passes each connection to that socket, and HTTP_PROXY/HTTPS_PROXY point at it, so requests,
# urllib3 and urllib go through the proxy unchanged. The proxy knows the agent by the socket.
import builtins
import json
import linecache
import os
import re
import socket
import struct
import sys
import threading
import time
import traceback
import types

_LEN = struct.Struct(">I")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,127}")


def _open_channel():
    # The protocol moves to private descriptors; 0 and 1 become /dev/null so that a function's
    # os.write(1, ...) cannot forge a frame by accident.
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    os.set_inheritable(rfd, False)
    os.set_inheritable(wfd, False)
    return os.fdopen(rfd, "rb", buffering=65536), wfd


_IN, _OUT = _open_channel()


def _accept(listener, path):
    # Each connection is handed to agentvault as a descriptor over the worker's socket: the proxy
    # then reads and writes it itself. Nothing of it stays here.
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            time.sleep(0.05)
            continue
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as handover:
                handover.connect(path)
                socket.send_fds(handover, [b"c"], [conn.fileno()])
        except OSError:
            pass
        finally:
            conn.close()


def _start_relay():
    if len(sys.argv) < 3:
        return
    path, port = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3:
        # The system's roots and agentvault's egress CA, which signs the certificates the proxy
        # presents for the hosts it injects credentials into.
        for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
            os.environ[name] = sys.argv[3]
    del sys.argv[1:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    url = "http://127.0.0.1:%d" % listener.getsockname()[1]
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ[name] = url
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(name, None)
    threading.Thread(target=_accept, args=(listener, path), daemon=True, name="agentvault-egress").start()


_start_relay()
_current = {"id": None}  # the invocation running now


def _send(msg):
    data = json.dumps(msg, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
    buf = _LEN.pack(len(data)) + data
    view = memoryview(buf)
    while view:
        n = os.write(_OUT, view)
        view = view[n:]


def _recv():
    head = _IN.read(4)
    if len(head) < 4:
        return None
    (n,) = _LEN.unpack(head)
    body = _IN.read(n)
    if len(body) < n:
        return None
    return json.loads(body)


class SecretNotFound(Exception):
    """No secret of this name exists in the workspace."""

    def __init__(self, secret_name):
        super().__init__(f"secret '{secret_name}' not found")
        self.secret_name = secret_name


class MissingAccess(Exception):
    """The secret exists, but this agent is not on its access list (or the secret is protected
    and this code may not have its value: the message says why and what to do)."""

    def __init__(self, agent_id, secret_name, message=None):
        super().__init__(message or f"agent {agent_id} has no access to secret '{secret_name}'")
        self.agent_id = agent_id
        self.secret_name = secret_name


class InvalidInput(Exception):
    """A malformed secret name (lowercase letters, digits and underscores)."""


class State(dict):
    """The conversation state: a dict whose keys are also attributes (missing ones are None)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        self.pop(name, None)


class _Limits:
    def __init__(self, max_output):
        self.max_output = max_output
        self.used = 0
        self.truncated = False

    def take(self, text):
        """Returns the text to keep, or None once the output limit is reached."""
        if self.truncated:
            return None
        if self.used + len(text) > self.max_output:
            self.truncated = True
            return None
        self.used += len(text)
        return text


class _Log:
    def __init__(self, logs, limits):
        self._logs = logs
        self._limits = limits

    def _add(self, level, content, is_pii):
        text = self._limits.take(str(content))
        if text is not None:
            self._logs.append({"level": level, "content": text, "is_pii": bool(is_pii)})

    def info(self, content, is_pii=False):
        self._add("info", content, is_pii)

    def warning(self, content, is_pii=False):
        self._add("warning", content, is_pii)

    def error(self, content, is_pii=False):
        self._add("error", content, is_pii)


class _Utils:
    def __init__(self, agent_id):
        self._agent_id = agent_id

    def get_secret(self, name):
        """The secret's value: a str for a single value, a dict for key/value pairs."""
        if not isinstance(name, str):
            _send({"t": "get_secret", "id": _current["id"], "name": None})
            _answer()
            raise InvalidInput(f"a secret name is a str, not {type(name).__name__}")
        _send({"t": "get_secret", "id": _current["id"], "name": name})
        answer = _answer()
        if answer.get("ok"):
            value = answer["value"]
            return dict(value) if isinstance(value, dict) else value
        kind = answer.get("error")
        if kind == "secret_not_found":
            raise SecretNotFound(name)
        if kind == "missing_access":
            raise MissingAccess(self._agent_id, name, answer.get("message") or None)
        raise InvalidInput(answer.get("message") or "invalid secret name")


def _answer():
    msg = _recv()
    if msg is None or msg.get("t") != "secret" or msg.get("id") != _current["id"]:
        os._exit(3)
    return msg


class Conversation:
    """What a function gets as its first argument."""

    def __init__(self, conv_id, env, state, agent_id, logs, utterances, limits):
        self.id = conv_id
        self.env = env
        self.state = State(state)
        self.agent_id = agent_id
        self.log = _Log(logs, limits)
        self.utils = _Utils(agent_id)
        self._utterances = utterances
        self._limits = limits

    def say(self, utterance):
        text = self._limits.take(str(utterance))
        if text is not None:
            self._utterances.append(text)


class _Print:
    """sys.stdout / sys.stderr during an invocation: lines become log entries."""

    def __init__(self, level, logs, limits):
        self._level, self._logs, self._limits, self._buf = level, logs, limits, ""

    def write(self, text):
        self._buf += str(text)
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._emit(line)
        return len(text)

    def _emit(self, line):
        kept = self._limits.take(line)
        if kept is not None:
            self._logs.append({"level": self._level, "content": kept, "is_pii": False})

    def flush(self):
        if self._buf:
            self._emit(self._buf)
            self._buf = ""

    def isatty(self):
        return False


# `from agentvault import SecretNotFound, MissingAccess, InvalidInput, Conversation`
_module = types.ModuleType("agentvault", "What agentvault gives a function.")
for _cls in (SecretNotFound, MissingAccess, InvalidInput, Conversation):
    _cls.__module__ = "agentvault"
    setattr(_module, _cls.__name__, _cls)
sys.modules["agentvault"] = _module

_functions = {}  # name -> (version, callable)


def _load(msg):
    name, version = msg["function"], msg["version"]
    code = msg.get("code")
    if code is None:
        return _functions[name][1]
    filename = f"{name}.py"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    scope = {
        "__name__": f"agentvault_function_{name}",
        "__builtins__": builtins,
        "Conversation": Conversation,
        "SecretNotFound": SecretNotFound,
        "MissingAccess": MissingAccess,
        "InvalidInput": InvalidInput,
    }
    exec(compile(code, filename, "exec"), scope)
    fn = scope.get(name)
    if not callable(fn):
        raise NameError(f"the code does not define {name}")
    _functions[name] = (version, fn)
    return fn


def _tb(exc):
    # The worker's own frames are left out: the traceback starts in the function's code.
    frames = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in frames if f.filename != "<string>"]
    lines = traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "Traceback (most recent call last):\n" + "".join(lines)


def _invoke(msg):
    conversation = msg.get("conversation") or {}
    logs, utterances = [], []
    limits = _Limits(int(msg.get("max_output", 1 << 20)))
    conv = Conversation(
        conversation.get("id"),
        conversation.get("env"),
        conversation.get("state") or {},
        msg.get("agent_id"),
        logs,
        utterances,
        limits,
    )
    out = {"t": "done", "id": msg.get("id"), "result": None, "error": None}
    saved = sys.stdout, sys.stderr
    sys.stdout = _Print("stdout", logs, limits)
    sys.stderr = _Print("stderr", logs, limits)
    try:
        fn = _load(msg)
        result = fn(conv, **(msg.get("args") or {}))
        if result is not None and not isinstance(result, (str, dict)):
            raise TypeError(f"{msg['function']} returned {type(result).__name__}; return a str or a dict")
        out["result"] = result
    except BaseException as exc:  # noqa: BLE001 - everything a function raises is its result
        message = str(exc)
        if isinstance(exc, MemoryError):
            message = "the function went over the worker's memory limit" + (f" ({message})" if message else "")
        elif not message:
            message = type(exc).__name__
        out["error"] = {
            "type": type(exc).__name__,
            "message": message,
            "traceback": _tb(exc),
        }
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved
    out["state"] = dict(conv.state)
    out["utterances"] = utterances
    out["logs"] = logs
    out["truncated"] = limits.truncated
    return out


def _unsendable(out, exc):
    return {
        "t": "done",
        "id": out["id"],
        "result": None,
        "state": {},
        "utterances": out["utterances"],
        "logs": out["logs"],
        "truncated": out["truncated"],
        "error": {
            "type": type(exc).__name__,
            "message": f"the result or the state cannot be sent as JSON: {exc}",
            "traceback": "",
        },
    }


def main():
    _send({"t": "ready", "python": sys.version.split()[0]})
    while True:
        msg = _recv()
        if msg is None:
            return
        if msg.get("t") == "invoke":
            _current["id"] = msg.get("id")
            started = time.perf_counter()
            out = _invoke(msg)
            out["worker_ms"] = (time.perf_counter() - started) * 1000
            try:
                _send(out)
            except (TypeError, ValueError, RecursionError) as exc:
                _send(_unsendable(out, exc))


main()
