// The Function Editor's code editor: CodeMirror 6 with Python highlighting and line numbers.
// Bundled by build.sh into ../editor.js, which the server embeds; no CDN.
import { basicSetup, EditorView } from "codemirror";
import { python } from "@codemirror/lang-python";
import { EditorSelection } from "@codemirror/state";

// Replaces a <textarea> with an editor that writes back into it on every change.
function attach(textarea) {
  const view = new EditorView({
    doc: textarea.value,
    extensions: [
      basicSetup,
      python(),
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
    setValue(text) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
    },
  };
}

window.AgentvaultEditor = { attach };
