# Checks an agent function without running it: it compiles, and it defines
# `def <name>(conv, <declared parameters>...)` at the top level. Also lists the secrets the code
# names: every `get_secret('<literal>')` call (`conv.utils.get_secret`, `utils.get_secret`,
# `get_secret`) with its line.
# argv: name, JSON list of declared parameter names. stdin: the code. stdout: one JSON object.
import ast
import json
import sys


def answer(ok, message="", line=None, refs=(), required=()):
    print(json.dumps({"ok": ok, "message": message, "line": line, "refs": list(refs), "required": list(required)}))
    sys.exit(0)


def secret_refs(tree):
    """[name, line] of each get_secret call whose first argument is a string literal."""
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        f = node.func
        named = (isinstance(f, ast.Attribute) and f.attr == "get_secret") or (
            isinstance(f, ast.Name) and f.id == "get_secret"
        )
        arg = node.args[0]
        if named and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            found.add((arg.value, node.lineno))
    return sorted(found, key=lambda r: (r[1], r[0]))


name = sys.argv[1]
declared = json.loads(sys.argv[2])
source = sys.stdin.read()
try:
    tree = ast.parse(source, filename="<function>")
    compile(tree, "<function>", "exec")
except SyntaxError as e:
    answer(False, f"{type(e).__name__}: {e.msg}", e.lineno)
except ValueError as e:
    answer(False, f"ValueError: {e}")

found = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name]
if not found:
    answer(False, f"the code does not define a function named {name} at the top level")
fn = found[-1]
if isinstance(fn, ast.AsyncFunctionDef):
    answer(False, f"{name} must be defined with def, not async def", fn.lineno)
args = fn.args
positional = [a.arg for a in args.posonlyargs + args.args]
if not positional or positional[0] != "conv":
    answer(False, f"the first parameter of {name} must be conv, e.g. def {name}(conv: Conversation, ...)", fn.lineno)
params = positional[1:] + [a.arg for a in args.kwonlyargs]
for p in declared:
    if p not in params and args.kwarg is None:
        answer(False, f"the declared parameter {p} is not a parameter of {name}", fn.lineno)
# Parameters after conv without a default must be declared, or a call from the LLM would fail.
defaults = len(args.defaults)
required = positional[1 : len(positional) - defaults] if defaults else positional[1:]
required += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None]
for p in required:
    if p not in declared:
        answer(False, f"the parameter {p} of {name} has no default and is not declared as an LLM parameter", fn.lineno)
# The declared parameters without a default: a call must pass them.
answer(True, refs=secret_refs(tree), required=[p for p in declared if p in required])
