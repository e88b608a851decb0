// The Function Editor's code editor: CodeMirror 6 with Python highlighting and line numbers.
// Bundled by build.sh into ../editor.js, which the server embeds; no CDN.
import { basicSetup, EditorView } from "codemirror";
import { python } from "@codemirror/lang-python";
import { EditorSelection, StateEffect, StateField } from "@codemirror/state";
import { Decoration } from "@codemirror/view";

// Lines marked by the console (e.g. a get_secret the agent cannot read), each with a title.
const setMarks = StateEffect.define();
const marks = StateField.define({
  create: () => Decoration.none,
  update(deco, tr) {
    deco = deco.map(tr.changes);
    for (const e of tr.effects) {
      if (!e.is(setMarks)) continue;
      const doc = tr.state.doc;
      const ranges = e.value
        .filter((m) => m.line >= 1 && m.line <= doc.lines)
        .sort((a, b) => a.line - b.line)
        .map((m) => Decoration.line({ attributes: { class: "cm-marked-line", title: m.title, "data-marked-line": String(m.line) } })
          .range(doc.line(m.line).from));
      deco = Decoration.set(ranges, true);
    }
    return deco;
  },
  provide: (f) => EditorView.decorations.from(f),
});

// Replaces a <textarea> with an editor that writes back into it on every change.
function attach(textarea) {
  const view = new EditorView({
    doc: textarea.value,
    extensions: [
      basicSetup,
      python(),
      marks,
      EditorView.updateListener.of((u) => {
        if (u.docChanged) textarea.value = u.state.doc.toString();
      }),
      EditorView.contentAttributes.of({ "aria-label": textarea.getAttribute("aria-label") || "Function definition" }),
    ],
  });
  textarea.hidden = true;
  textarea.after(view.dom);
  return {
    view,
    // Puts the cursor on a line (1-based) and shows it.
    goToLine(n) {
      const line = view.state.doc.line(Math.max(1, Math.min(n, view.state.doc.lines)));
      view.dispatch({ selection: EditorSelection.cursor(line.from), scrollIntoView: true });
      view.focus();
    },
    // Marks lines: [{line (1-based), title}]; replaces earlier marks.
    mark(list) {
      view.dispatch({ effects: setMarks.of(list) });
    },
    setValue(text) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
    },
  };
}

window.AgentvaultEditor = { attach };
