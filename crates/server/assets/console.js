// agentvault console: forms go to the JSON API with the session's CSRF token; each error is
// shown beside the field it names, and the form keeps what was typed (except secret values).
"use strict";

(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const SECRET_NAME = /^[a-z][a-z0-9_]*$/;

  async function api(method, path, body) {
    const headers = { "X-CSRF-Token": csrf() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await resp.json(); } catch (_) { data = null; }
    // A page whose session has ended (expired, or signed out elsewhere): sign in again, then back.
    if (resp.status === 401 && csrf() && !path.startsWith("/api/v1/invitations/")) {
      window.location.assign("/login?expired=1&next=" + encodeURIComponent(window.location.pathname + window.location.search));
      throw { message: "your session has ended; sign in again" };
    }
    if (!resp.ok) {
      const err = (data && data.error) || { message: "the server answered " + resp.status };
      throw err;
    }
    return data;
  }

  function clearErrors(form) {
    form.querySelectorAll("[data-error-for]").forEach((el) => { el.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  }

  // Shows an API error beside its field (the first path segment: "args.amount" -> "args"),
  // or at the form's bottom when no field matches.
  function showError(form, err) {
    const field = (err.field || "").split(/[.[]/)[0];
    let slot = field && form.querySelector('[data-error-for="' + field + '"]');
    if (!slot) slot = form.querySelector('[data-error-for=""]');
    if (slot) slot.textContent = err.message || "something went wrong";
    const input = field && form.querySelector('[name="' + field + '"]');
    if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
  }

  function checked(form, name) {
    return Array.from(form.querySelectorAll('input[name="' + name + '"]:checked')).map((i) => i.value);
  }

  function value(form, name) {
    const el = form.querySelector('[name="' + name + '"]');
    return el ? el.value : "";
  }

  function secretValue(form) {
    const kind = (form.querySelector('input[name="kind"]:checked') || {}).value;
    if (kind !== "kv") return value(form, "value");
    const pairs = {};
    form.querySelectorAll("[data-kv-rows] tbody tr").forEach((tr) => {
      const k = tr.querySelector("[data-kv-key]").value.trim();
      const v = tr.querySelector("[data-kv-value]").value;
      if (!k && !v) return;
      if (!k) throw { field: "value", message: "give a key for the value in row " + (tr.rowIndex) };
      if (Object.prototype.hasOwnProperty.call(pairs, k)) throw { field: "value", message: "the key " + k + " is given twice; each key once" };
      if (!v) throw { field: "value", message: "give a value for the key " + k };
      pairs[k] = v;
    });
    return pairs;
  }

  // Leading or trailing whitespace in a value is usually a paste accident: ask before keeping it.
  function confirmWhitespace(value) {
    const odd = (v) => typeof v === "string" && v !== "" && v !== v.trim();
    const names = typeof value === "string" ? (odd(value) ? ["the value"] : [])
      : Object.keys(value || {}).filter((k) => odd(value[k])).map((k) => "the value of " + k);
    return names.length === 0 ||
      window.confirm(names.join(", ") + " starts or ends with spaces or line breaks. Keep them as typed?");
  }

  function parameters(form) {
    return Array.from(form.querySelectorAll("[data-param-row]")).map((tr) => ({
      name: tr.querySelector("[data-param-name]").value.trim(),
      description: tr.querySelector("[data-param-description]").value,
      type: tr.querySelector("[data-param-type]").value,
    }));
  }

  function parseJson(form, field, text, what) {
    try {
      const v = JSON.parse(text || "{}");
      if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
      return v;
    } catch (_) {
      throw { field, message: what + " must be a JSON object, such as {\"amount\": 5}" };
    }
  }

  function show(el, text) { el.textContent = text; }

  // Hosts typed one a line or separated by commas or spaces.
  function hostList(text) {
    return text.split(/[\s,]+/).map((h) => h.trim()).filter((h) => h);
  }

  const ws = (form) => "/api/v1/workspaces/" + form.dataset.ws;

  const handlers = {
    "member-add": async (form) => {
      const body = { email: value(form, "email").trim(), role: value(form, "role") };
      const invitation = await api("POST", ws(form) + "/members", body);
      form.hidden = true;
      const shown = form.parentElement.querySelector("[data-new-invitation]");
      shown.querySelector("[data-invited-email]").textContent = invitation.email;
      shown.querySelector("input").value = window.location.origin + invitation.path;
      shown.hidden = false;
    },
    "invitation-revoke": async (form) => {
      if (!window.confirm("Revoke the invitation of " + form.dataset.email + "? Its link stops working.")) return;
      await api("DELETE", ws(form) + "/invitations/" + form.dataset.invitation);
      window.location.reload();
    },
    "invite-create": async (form) => {
      await api("POST", "/api/v1/invitations/" + form.dataset.code + "/accept", {
        name: value(form, "name"), password: value(form, "password"),
      });
      window.location.assign("/w/" + form.dataset.ws + "/agents");
    },
    "invite-signin": async (form) => {
      await api("POST", "/api/v1/invitations/" + form.dataset.code + "/accept", { password: value(form, "password") });
      window.location.assign("/w/" + form.dataset.ws + "/agents");
    },
    "invite-join": async (form) => {
      await api("POST", "/api/v1/invitations/" + form.dataset.code + "/accept", {});
      window.location.assign("/w/" + form.dataset.ws + "/agents");
    },
    "member-role": async (form) => {
      const select = form.querySelector('[name="role"]');
      try {
        await api("PATCH", ws(form) + "/members/" + form.dataset.user, { role: select.value });
      } catch (err) {
        // Refused (e.g. the last admin): the control shows the role that still holds.
        select.value = select.dataset.savedValue;
        throw err;
      }
      select.dataset.savedValue = select.value;
      form.querySelector("[data-saved]").hidden = false;
    },
    "member-remove": async (form) => {
      if (!window.confirm("Remove " + form.dataset.email + " from this workspace?")) return;
      await api("DELETE", ws(form) + "/members/" + form.dataset.user);
      window.location.reload();
    },
    "key-create": async (form) => {
      const scope = (form.querySelector('input[name="scope"]:checked') || {}).value;
      const body = { name: value(form, "name").trim(), agents: scope === "chosen" ? checked(form, "agents") : "all" };
      if (value(form, "env")) body.env = value(form, "env");
      const exp = value(form, "expires_at");
      if (exp) body.expires_at = (exp.length === 16 ? exp + ":00" : exp) + "Z";
      const key = await api("POST", ws(form) + "/api-keys", body);
      form.hidden = true;
      const shown = form.parentElement.querySelector("[data-new-token]");
      shown.querySelector("input").value = key.token;
      shown.hidden = false;
      await refresh("keys-list");
    },
    "key-revoke": async (form) => {
      if (!window.confirm("Revoke the API key " + form.dataset.name + "? Anything using it stops working.")) return;
      await api("DELETE", ws(form) + "/api-keys/" + form.dataset.key);
      window.location.reload();
    },
    "password-change": async (form) => {
      const out = await api("PUT", "/api/v1/me/password", {
        current_password: value(form, "current_password"), new_password: value(form, "new_password"),
        revoke_tokens: form.querySelector('[name="revoke_tokens"]').checked,
      });
      form.querySelectorAll('input[type="password"]').forEach((i) => { i.value = ""; });
      const saved = form.querySelector("[data-saved]");
      saved.textContent = "Password changed. " + out.sessions_ended + " other session" + (out.sessions_ended === 1 ? "" : "s") +
        " ended" + (out.tokens_revoked ? ", " + out.tokens_revoked + " token" + (out.tokens_revoked === 1 ? "" : "s") + " revoked" : "") + ".";
      saved.hidden = false;
    },
    "token-create": async (form) => {
      const body = { name: value(form, "name").trim() };
      const exp = value(form, "expires_at");
      if (exp) body.expires_at = (exp.length === 16 ? exp + ":00" : exp) + "Z";
      const t = await api("POST", "/api/v1/me/tokens", body);
      form.hidden = true;
      const shown = form.parentElement.querySelector("[data-new-token]");
      shown.querySelector("input").value = t.token;
      shown.hidden = false;
    },
    "token-revoke": async (form) => {
      if (!window.confirm("Revoke the token " + form.dataset.name + "? Anything using it stops working.")) return;
      await api("DELETE", "/api/v1/me/tokens/" + form.dataset.token);
      window.location.reload();
    },
    "session-end": async (form) => {
      if (form.dataset.current) {
        await api("POST", "/api/v1/auth/logout");
        window.location.assign("/login");
        return;
      }
      await api("DELETE", "/api/v1/me/sessions/" + form.dataset.session);
      window.location.reload();
    },
    "agent-update": async (form) => {
      const agent = await api("PATCH", ws(form) + "/agents/" + form.dataset.agent, {
        name: value(form, "name").trim(), description: value(form, "description"),
      });
      document.querySelectorAll("h1").forEach((h) => { h.textContent = agent.name; });
      form.querySelector("[data-saved]").hidden = false;
    },
    "agent-delete": async (form) => {
      if (!window.confirm("Delete the agent " + form.dataset.name + " and its functions? This cannot be undone.")) return;
      await api("DELETE", ws(form) + "/agents/" + form.dataset.agent);
      window.location.assign(withNotice("/w/" + form.dataset.ws + "/agents", "Agent " + form.dataset.name + " deleted."));
    },
    "function-delete": async (form) => {
      if (!window.confirm("Delete the function " + form.dataset.name + "? This cannot be undone.")) return;
      await api("DELETE", ws(form) + "/agents/" + form.dataset.agent + "/functions/" + form.dataset.name);
      window.location.assign(withNotice("/w/" + form.dataset.ws + "/agents/" + form.dataset.agent, "Function " + form.dataset.name + " deleted."));
    },
    "workspace-create": async (form) => {
      const created = await api("POST", "/api/v1/workspaces", { name: value(form, "name").trim() });
      window.location.assign("/w/" + created.id + "/agents");
    },
    "function-save": async (form) => {
      const existing = form.dataset.existing;
      const base = "/api/v1/workspaces/" + form.dataset.ws + "/agents/" + form.dataset.agent + "/functions";
      const timeout = value(form, "timeout_ms").trim();
      const body = { description: value(form, "description"), parameters: parameters(form), code: value(form, "code") };
      if (timeout) {
        if (!/^\d+$/.test(timeout)) throw { field: "timeout_ms", message: "the timeout is a whole number of milliseconds" };
        body.timeout_ms = Number(timeout);
      }
      try {
        if (existing) {
          await api("PUT", base + "/" + existing, body);
          markSaved();
          form.querySelector("[data-saved]").hidden = false;
        } else {
          body.name = value(form, "name").trim();
          const f = await api("POST", base, body);
          markSaved();
          window.location.assign("/w/" + form.dataset.ws + "/agents/" + form.dataset.agent + "/functions/" + f.name);
        }
      } catch (err) {
        const m = /^line (\d+):/.exec(err.message || "");
        if (err.field === "code" && m && editor) editor.goToLine(Number(m[1]));
        throw err;
      }
    },
    "function-test": async (form) => {
      const args = parseJson(form, "args", value(form, "args"), "the arguments");
      const state = parseJson(form, "conversation", value(form, "state"), "the state");
      const agentBase = "/api/v1/workspaces/" + form.dataset.ws + "/agents/" + form.dataset.agent;
      const conversation = { env: value(form, "env"), state };
      let out;
      let ran;
      if (isUnsaved() && conversation.env === "sandbox") {
        // What the editor holds, as an unsaved draft: checked like a save, never stored. Drafts
        // run in sandbox only; pre-release and live run what was deployed there.
        const saveForm = document.querySelector('form[data-form="function-save"]');
        const timeout = value(saveForm, "timeout_ms").trim();
        const draft = {
          name: form.dataset.name, description: value(saveForm, "description"),
          parameters: parameters(saveForm), code: value(saveForm, "code"),
        };
        if (timeout) {
          if (!/^\d+$/.test(timeout)) throw { message: "The draft did not run: the timeout is a whole number of milliseconds" };
          draft.timeout_ms = Number(timeout);
        }
        let res;
        try {
          res = await api("POST", agentBase + "/draft-runs", { function: draft, args, conversation });
        } catch (err) {
          // A definition that would not save: shown at its field in the editor too.
          if (err.field && err.field.startsWith("function.")) {
            clearErrors(saveForm);
            showError(saveForm, { field: err.field.slice("function.".length), message: err.message });
            const m = /^line (\d+):/.exec(err.message || "");
            if (err.field === "function.code" && m && editor) editor.goToLine(Number(m[1]));
            throw { message: "The draft did not run: " + err.message };
          }
          throw err;
        }
        out = res.run;
        ran = "Ran the unsaved draft in the editor (code SHA-256 " + res.code_sha256.slice(0, 12) + "…); it was not saved as a version.";
      } else {
        out = await api("POST", agentBase + "/functions/" + form.dataset.name + "/invoke", { args, conversation });
        const picked = form.querySelector("[data-test-env]");
        const deployed = picked && picked.selectedOptions[0] ? picked.selectedOptions[0].dataset.version : null;
        ran = conversation.env === "sandbox"
          ? "Ran the saved version " + form.dataset.version + "."
          : "Ran version " + deployed + ", deployed to " + conversation.env + ".";
      }
      const panel = document.querySelector("[data-test-output]");
      const o = (k) => panel.querySelector('[data-out="' + k + '"]');
      o("ran").textContent = ran;
      show(o("result"), out.result === null ? "None" : typeof out.result === "string" ? out.result : JSON.stringify(out.result, null, 2));
      show(o("utterances"), out.utterances.join("\n") || "—");
      show(o("logs"), out.logs.map((l) => "[" + l.level + (l.is_pii ? ", pii" : "") + "] " + l.content).join("\n") || "—");
      // The agent by name rather than by id.
      const named = (text) => text.split("agent " + form.dataset.agent).join("agent \"" + form.dataset.agentName + "\"");
      show(o("error"), out.error ? named(out.error.type + ": " + out.error.message + (out.error.traceback ? "\n\n" + out.error.traceback : "")) : "—");
      testActions(form, panel.querySelector("[data-test-actions]"), out.error);
      show(o("duration"), out.duration_ms.toFixed(1) + " ms" + (out.cold ? " (new worker)" : "") + (out.sandboxed ? "" : " · unsandboxed"));
      panel.hidden = false;
      // The state carries over to the next run until it is reset.
      form.querySelector('[name="state"]').value = JSON.stringify(out.state);
    },
    "function-deploy": async (form) => {
      const env = form.dataset.env;
      const version = Number(form.dataset.version);
      const row = document.querySelector('#deployments tr[data-env="' + env + '"] [data-runs]');
      const rollback = row && /version (\d+)/.test(row.textContent) && Number(/version (\d+)/.exec(row.textContent)[1]) > version;
      if (!window.confirm((rollback ? "Roll " + env + " back to" : "Deploy") + " version " + version + " of " + form.dataset.name +
          (rollback ? "" : " to " + env) + "? Conversations in " + env + " run it from their next call.")) return;
      await api("POST", "/api/v1/workspaces/" + form.dataset.ws + "/agents/" + form.dataset.agent + "/functions/" + form.dataset.name + "/deploy",
        { env, version });
      window.location.assign(withNotice(window.location.pathname, "Version " + version + " runs in " + env + " now."));
    },
    login: async (form) => {
      await api("POST", "/api/v1/auth/login", { email: value(form, "email"), password: value(form, "password") });
      window.location.assign(form.dataset.next || "/");
    },
    "agent-new": async (form) => {
      await api("POST", "/api/v1/workspaces/" + form.dataset.ws + "/agents", {
        name: value(form, "name"), description: value(form, "description"),
      });
      window.location.reload();
    },
    "secret-new": async (form) => {
      const name = value(form, "name").trim();
      const secretVal = secretValue(form);
      if (!confirmWhitespace(secretVal)) return;
      const secret = await api("POST", "/api/v1/workspaces/" + form.dataset.ws + "/secrets", {
        name, description: value(form, "description"), value: secretVal, agents: checked(form, "agents"),
      });
      window.location.assign(withNotice("/w/" + form.dataset.ws + "/secrets/" + secret.name, "Secret " + secret.name + " created."));
    },
    "secret-update": async (form) => {
      const body = { description: value(form, "description") };
      if (form.dataset.kind === "kv") {
        const pairs = {};
        const keep = [];
        const originals = [];
        form.querySelectorAll("[data-kv-rows] tbody tr").forEach((tr) => {
          const keyInput = tr.querySelector("[data-kv-key]");
          const k = keyInput.value.trim();
          const v = tr.querySelector("[data-kv-value]").value;
          const original = keyInput.dataset.originalKey;
          if (original) originals.push(original);
          if (!k && !v) return;
          if (!k) throw { field: "value", message: "give a key for the new value" };
          if (Object.prototype.hasOwnProperty.call(pairs, k) || keep.includes(k)) {
            throw { field: "value", message: "the key " + k + " is given twice; each key once" };
          }
          if (v) pairs[k] = v;
          else if (original && original === k) keep.push(k);
          else throw { field: "value", message: "give a value for the key " + (k || "(empty)") };
        });
        const unchanged = Object.keys(pairs).length === 0 && keep.length === originals.length;
        if (!unchanged) { body.value = pairs; body.keep = keep; }
      } else if (value(form, "value")) {
        body.value = value(form, "value");
      }
      if (body.value !== undefined && !confirmWhitespace(body.value)) return;
      const updated = await api("PATCH", ws(form) + "/secrets/" + form.dataset.name, body);
      window.location.assign(withNotice(window.location.pathname,
        body.value === undefined ? "Saved." : "Saved as version " + updated.version + "."));
    },
    "secret-env-value": async (form) => {
      const env = value(form, "env");
      let v = value(form, "value");
      if (!v) throw { field: "values", message: "type the " + env + " value" };
      if (v.trim().startsWith("{")) {
        try { v = JSON.parse(v); } catch (_) { throw { field: "values", message: "key/value pairs are a JSON object, e.g. {\"client_id\": \"...\"}" }; }
      } else if (!confirmWhitespace(v)) return;
      const values = {};
      values[env] = v;
      const out = await api("PATCH", ws(form) + "/secrets/" + form.dataset.name, { values });
      const own = out.environments.find((e) => e.env === env);
      window.location.assign(withNotice(window.location.pathname,
        "Saved the " + env + " value" + (own ? " as its version " + own.version : "") + "."));
    },
    "secret-env-remove": async (form) => {
      const env = form.dataset.env;
      if (!window.confirm("Remove the " + env + " value of " + form.dataset.name + "? " + env + " reads the default value from its next read.")) return;
      const values = {};
      values[env] = null;
      await api("PATCH", ws(form) + "/secrets/" + form.dataset.name, { values });
      window.location.assign(withNotice(window.location.pathname, "Removed the " + env + " value: " + env + " reads the default."));
    },
    "secret-protected": async (form) => {
      const on = form.querySelector('input[name="protected"]').checked;
      await api("PATCH", ws(form) + "/secrets/" + form.dataset.name, { protected: on });
      window.location.assign(withNotice(window.location.pathname, on ? "Protected." : "No longer protected."));
    },
    "secret-access": async (form) => {
      await api("PUT", "/api/v1/workspaces/" + form.dataset.ws + "/secrets/" + form.dataset.name + "/access", {
        agents: checked(form, "agents"),
      });
      const saved = form.querySelector("[data-saved]");
      if (saved) saved.hidden = false;
    },
    "secret-injection": async (form) => {
      const injected = (form.querySelector('input[name="use"]:checked') || {}).value === "injected";
      await api("PUT", "/api/v1/workspaces/" + form.dataset.ws + "/secrets/" + form.dataset.name + "/injection", {
        injected_only: injected,
        hosts: injected ? hostList(value(form, "hosts")) : [],
      });
      window.location.reload();
    },
    "agent-egress": async (form) => {
      const mode = (form.querySelector('input[name="mode"]:checked') || {}).value || "default";
      await api("PUT", "/api/v1/workspaces/" + form.dataset.ws + "/agents/" + form.dataset.agent + "/egress", {
        mode,
        hosts: mode === "allowlist" ? hostList(value(form, "hosts")) : [],
      });
      window.location.reload();
    },
    "secret-import": async (form) => {
      const rows = importRows(form);
      showImportPreview(form, rows);
      if (!rows.length) throw { field: "import", message: "paste a .env file or a JSON object first" };
      const bad = rows.filter((r) => r.problem);
      if (bad.length) {
        throw { field: "", message: bad.length + " of " + rows.length + " cannot be imported (see the preview); nothing was imported" };
      }
      const agents = checked(form, "agents");
      const out = await api("POST", ws(form) + "/secret-imports", {
        secrets: rows.map((r) => ({ name: r.name, value: r.value, agents })),
      });
      window.location.assign(withNotice("/w/" + form.dataset.ws + "/secrets",
        out.items.length + " secret" + (out.items.length === 1 ? "" : "s") + " imported."));
    },
    "access-approve": async (form) => {
      await api("POST", ws(form) + "/access-requests/" + form.dataset.request + "/approve");
      window.location.assign(withNotice(window.location.pathname, "Approved: the agent can read this secret now."));
    },
    "access-decline": async (form) => {
      await api("POST", ws(form) + "/access-requests/" + form.dataset.request + "/decline");
      window.location.assign(withNotice(window.location.pathname, "Declined."));
    },
    "version-restore": async (form) => {
      if (!window.confirm("Restore version " + form.dataset.version + " of " + form.dataset.name +
          "? Its value becomes a new version, read by agents from their next read.")) return;
      const out = await api("POST", ws(form) + "/secrets/" + form.dataset.name + "/versions/" + form.dataset.version + "/restore");
      window.location.assign(withNotice(window.location.pathname, "Version " + form.dataset.version + " restored as version " + out.version + "."));
    },
    "secret-delete": async (form) => {
      if (value(form, "confirm") !== form.dataset.name) {
        throw { field: "confirm", message: "type the secret's name, " + form.dataset.name + ", to delete it" };
      }
      // Functions that name the secret fail once it is gone: say which, and ask.
      const usedBy = form.dataset.usedBy;
      if (usedBy && !window.confirm("These functions read " + form.dataset.name + " and will fail with SecretNotFound:\n\n" +
          usedBy + "\n\nDelete it anyway?")) return;
      await api("DELETE", "/api/v1/workspaces/" + form.dataset.ws + "/secrets/" + form.dataset.name);
      window.location.assign(withNotice("/w/" + form.dataset.ws + "/secrets", "Secret " + form.dataset.name + " deleted."));
    },
  };

  document.addEventListener("submit", async (ev) => {
    const form = ev.target.closest("form[data-form]");
    if (!form || !handlers[form.dataset.form]) return;
    ev.preventDefault();
    clearErrors(form);
    const saved = form.querySelector("[data-saved]");
    if (saved) saved.hidden = true;
    const button = form.querySelector('button[type="submit"]');
    if (button) button.disabled = true;
    try {
      await handlers[form.dataset.form](form);
    } catch (err) {
      showError(form, err);
      // What was typed stays, except secret values: those are typed again, and the form says so.
      if (err.field !== undefined && form.dataset.form.startsWith("secret-")) {
        let cleared = 0;
        form.querySelectorAll('[name="value"], [data-kv-value]').forEach((i) => { if (i.value) cleared++; i.value = ""; });
        const slot = form.querySelector('[data-error-for=""]');
        if (cleared && slot) {
          slot.textContent = (slot.textContent ? slot.textContent + " " : "") +
            "The secret value" + (cleared > 1 ? "s were" : " was") + " cleared; type " + (cleared > 1 ? "them" : "it") + " again.";
        }
      }
    } finally {
      if (button) button.disabled = false;
    }
  });

  // The secret name rule, as you type.
  document.addEventListener("input", (ev) => {
    const el = ev.target;
    if (el.matches("[data-secret-name]")) {
      const slot = el.form.querySelector('[data-error-for="name"]');
      const v = el.value;
      let msg = "";
      if (v && !/^[a-z]/.test(v)) msg = "must start with a lowercase letter (a-z)";
      else if (v && !SECRET_NAME.test(v)) msg = "only lowercase letters, digits and underscores";
      else if (v.length > 64) msg = "at most 64 characters";
      else if (v && (el.dataset.existing || "").split(" ").includes(v)) msg = "a secret named " + v + " already exists";
      slot.textContent = msg;
      if (msg) el.setAttribute("aria-invalid", "true"); else el.removeAttribute("aria-invalid");
    }
    if (el.matches("[data-filter-table]")) filterTable(el.dataset.filterTable);
  });
  document.addEventListener("change", (ev) => {
    if (ev.target.matches("select[data-filter-table]")) filterTable(ev.target.dataset.filterTable);
  });

  // A table's rows that match every filter naming it: text (search) and agent.
  function filterTable(id) {
    const table = document.getElementById(id);
    const controls = document.querySelectorAll('[data-filter-table="' + id + '"]');
    let q = "";
    let agent = "";
    controls.forEach((c) => { if (c.matches("[data-filter-agent]")) agent = c.value; else q = c.value.trim().toLowerCase(); });
    let shown = 0;
    table.querySelectorAll("tbody tr").forEach((tr) => {
      const hit = (!q || tr.dataset.filterText.toLowerCase().includes(q)) &&
        (!agent || (tr.dataset.agents || "").split(" ").includes(agent));
      tr.hidden = !hit;
      if (hit) shown++;
    });
    const empty = document.querySelector('[data-filter-empty="' + id + '"]');
    if (empty) empty.hidden = shown > 0;
  }

  // Sortable tables: each column heading sorts by that column, again for the reverse order.
  function sortKey(td) {
    const t = td && td.querySelector("time[datetime]");
    if (t) return t.getAttribute("datetime");
    return td ? td.innerText.trim().toLowerCase() : "";
  }
  function makeSortable(table) {
    table.querySelectorAll("thead th").forEach((th, i) => {
      if (!th.textContent.trim() || th.querySelector(".sr-only")) return;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.textContent = th.textContent;
      th.replaceChildren(button);
      button.addEventListener("click", () => {
        const asc = th.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("thead th").forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        const tbody = table.tBodies[0];
        const rows = Array.from(tbody.rows);
        rows.sort((a, b) => {
          const x = sortKey(a.cells[i]);
          const y = sortKey(b.cells[i]);
          const nx = Number(x);
          const ny = Number(y);
          const c = x !== "" && y !== "" && !Number.isNaN(nx) && !Number.isNaN(ny) ? nx - ny : x.localeCompare(y);
          return asc ? c : -c;
        });
        tbody.append(...rows);
      });
    });
  }
  window.addEventListener("DOMContentLoaded", () => document.querySelectorAll("table[data-sortable]").forEach(makeSortable));

  function addPair(tbody) {
    const n = tbody.children.length + 1;
    const tr = document.createElement("tr");
    tr.innerHTML =
      '<td><label class="sr-only" for="kv-key-' + n + '">Key ' + n + '</label><input id="kv-key-' + n + '" data-kv-key autocomplete="off" spellcheck="false"></td>' +
      '<td><label class="sr-only" for="kv-value-' + n + '">Value ' + n + '</label><input id="kv-value-' + n + '" type="' + (tbody.dataset.shown ? "text" : "password") + '" data-kv-value data-maskable autocomplete="new-password" spellcheck="false"></td>' +
      '<td><button type="button" data-kv-remove aria-label="Remove pair ' + n + '">Remove</button></td>';
    tbody.appendChild(tr);
    return tr;
  }

  document.addEventListener("click", async (ev) => {
    const el = ev.target;
    if (el.matches("[data-kv-add]")) {
      addPair(el.form.querySelector("[data-kv-rows] tbody")).querySelector("input").focus();
    } else if (el.matches("[data-kv-remove]")) {
      // Focus stays in the pairs: on the next row's key, else the previous row's, else Add pair.
      const tr = el.closest("tr");
      const next = tr.nextElementSibling || tr.previousElementSibling;
      const form = el.form;
      tr.remove();
      const target = next ? next.querySelector("[data-kv-key]") : form.querySelector("[data-kv-add]");
      if (target) target.focus();
    } else if (el.matches("[data-check-all], [data-check-none]")) {
      const name = el.dataset.checkAll || el.dataset.checkNone;
      el.form.querySelectorAll('input[name="' + name + '"]').forEach((i) => { i.checked = !!el.dataset.checkAll; });
    } else if (el.matches("[data-param-add]")) {
      addParam(el.form.querySelector("[data-param-rows] tbody")).querySelector("input").focus();
    } else if (el.matches("[data-param-remove]")) {
      // As for pairs: focus stays in the parameters (next row, else previous, else Add).
      const tr = el.closest("tr");
      const next = tr.nextElementSibling || tr.previousElementSibling;
      const form = el.form;
      tr.remove();
      const target = next ? next.querySelector("[data-param-name]") : form.querySelector("[data-param-add]");
      if (target) target.focus();
    } else if (el.matches("[data-copy-from]")) {
      const input = document.getElementById(el.dataset.copyFrom);
      try { await navigator.clipboard.writeText(input.value); toast("Copied"); } catch (_) { input.select(); toast("Press Ctrl+C to copy"); }
    } else if (el.matches("[data-copy]")) {
      try { await navigator.clipboard.writeText(el.dataset.copy); toast("Copied " + el.dataset.copy); } catch (_) { toast(el.dataset.copy); }
    } else if (el.matches("[data-test-reset]")) {
      el.form.querySelector('[name="state"]').value = "{}";
    } else if (el.matches("[data-sign-out]")) {
      try { await api("POST", "/api/v1/auth/logout"); } catch (_) { /* signed out either way */ }
      window.location.assign("/login");
    } else if (el.matches("[data-request-access]")) {
      el.disabled = true;
      try {
        await api("POST", "/api/v1/workspaces/" + el.dataset.ws + "/agents/" + el.dataset.agent + "/access-requests",
          { secret: el.dataset.requestAccess });
        window.location.assign(withNotice(window.location.pathname, "Access to " + el.dataset.requestAccess + " requested; an admin will answer."));
      } catch (err) {
        toast(err.message || "access could not be requested");
        el.disabled = false;
      }
    } else if (el.matches("[data-goto-line]")) {
      if (editor) editor.goToLine(Number(el.dataset.gotoLine));
    } else if (el.matches("[data-grant-secret]")) {
      // Adds this agent to the secret's access list (admins), keeping everyone already on it.
      const base = "/api/v1/workspaces/" + el.dataset.ws + "/secrets/" + el.dataset.grantSecret;
      el.disabled = true;
      try {
        const secret = await api("GET", base);
        const agents = secret.agents.includes(el.dataset.agent) ? secret.agents : secret.agents.concat([el.dataset.agent]);
        await api("PUT", base + "/access", { agents });
        toast("Access granted to " + el.dataset.grantSecret);
        window.location.reload();
      } catch (err) {
        toast(err.message || "access could not be granted");
        el.disabled = false;
      }
    } else if (el.matches("[data-copy-reveal]")) {
      // Copies without showing the value (one audited reveal); a value already shown is copied as is.
      const input = document.getElementById(el.dataset.copyReveal);
      const text = input.dataset.revealed ? input.value : await fetchValue(input);
      if (text !== null) {
        try { await navigator.clipboard.writeText(text); toast("Copied"); } catch (_) { toast("Copy failed; reveal the value and copy it"); }
      }
    } else if (el.matches("[data-show-hide-text]")) {
      const area = document.getElementById(el.dataset.showHideText);
      const show = area.classList.toggle("shown");
      el.textContent = show ? "Hide" : "Show";
      el.setAttribute("aria-pressed", String(show));
    } else if (el.matches("[data-show-hide]")) {
      const input = document.getElementById(el.dataset.showHide);
      const show = input.type === "password";
      input.type = show ? "text" : "password";
      el.textContent = show ? "Hide" : "Show";
      el.setAttribute("aria-pressed", String(show));
    } else if (el.matches("[data-show-hide-all]")) {
      const tbody = el.form.querySelector("[data-kv-rows] tbody");
      const show = !tbody.dataset.shown;
      if (show) tbody.dataset.shown = "1"; else delete tbody.dataset.shown;
      tbody.querySelectorAll("[data-kv-value]").forEach((i) => { i.type = show ? "text" : "password"; });
      el.textContent = show ? "Hide values" : "Show values";
      el.setAttribute("aria-pressed", String(show));
    }
  });

  function addParam(tbody) {
    const n = tbody.children.length + 1 + Math.floor(Math.random() * 1e6);
    const tr = document.createElement("tr");
    tr.setAttribute("data-param-row", "");
    tr.innerHTML =
      '<td><label class="sr-only" for="param-name-' + n + '">Parameter name</label><input id="param-name-' + n + '" data-param-name autocomplete="off" spellcheck="false"></td>' +
      '<td><label class="sr-only" for="param-description-' + n + '">Parameter description</label><input id="param-description-' + n + '" data-param-description></td>' +
      '<td><label class="sr-only" for="param-type-' + n + '">Parameter type</label><select id="param-type-' + n + '" data-param-type>' +
      "<option>string</option><option>number</option><option>integer</option><option>boolean</option></select></td>" +
      '<td><button type="button" data-param-remove>Remove</button></td>';
    tbody.appendChild(tr);
    return tr;
  }

  // What to do about a secret a test run could not read: for admins, grant access (or create
  // the secret) in place; for members, whom to ask.
  function testActions(form, box, error) {
    box.replaceChildren();
    if (!error || (error.type !== "MissingAccess" && error.type !== "SecretNotFound")) return;
    const m = /secret '([a-z][a-z0-9_]{0,63})'/.exec(error.message || "");
    if (!m) return;
    const secret = m[1];
    if (!form.dataset.admin) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "Ask a workspace admin to " + (error.type === "MissingAccess" ? "grant " + form.dataset.agentName + " access to " : "create ") + secret + ", or request it: ";
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small";
      button.dataset.requestAccess = secret;
      button.dataset.ws = form.dataset.ws;
      button.dataset.agent = form.dataset.agent;
      button.textContent = "Request access";
      p.append(button);
      box.append(p);
      return;
    }
    if (error.type === "MissingAccess") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small";
      button.dataset.grantSecret = secret;
      button.dataset.ws = form.dataset.ws;
      button.dataset.agent = form.dataset.agent;
      button.textContent = "Grant " + form.dataset.agentName + " access to " + secret;
      box.append(button);
    } else {
      const a = document.createElement("a");
      a.className = "button small";
      a.href = "/w/" + form.dataset.ws + "/secrets/new?name=" + encodeURIComponent(secret) + "&agent=" + encodeURIComponent(form.dataset.agent);
      a.textContent = "Create " + secret;
      box.append(a);
    }
  }

  // Bulk import: a .env file (NAME=value lines; `export`, comments and quotes allowed) or a JSON
  // object of names to strings or objects of strings. Each row says what is wrong with it.
  function importRows(form) {
    const text = value(form, "import").trim();
    if (!text) return [];
    let entries = [];
    if (text.startsWith("{")) {
      let obj;
      try { obj = JSON.parse(text); } catch (_) { throw { field: "import", message: "this is not valid JSON; check the quotes and commas" }; }
      if (obj === null || typeof obj !== "object" || Array.isArray(obj)) throw { field: "import", message: "the JSON must be an object of names to values" };
      entries = Object.entries(obj).map(([k, v]) => ({ raw: k, value: v }));
    } else {
      text.split(/\r?\n/).forEach((line, i) => {
        let l = line.trim();
        if (!l || l.startsWith("#")) return;
        if (l.startsWith("export ")) l = l.slice(7).trim();
        const eq = l.indexOf("=");
        if (eq < 1) { entries.push({ raw: l.slice(0, 40), value: "", problem: "line " + (i + 1) + " is not NAME=value" }); return; }
        let v = l.slice(eq + 1).trim();
        const q = v[0];
        if ((q === '"' || q === "'") && v.length >= 2 && v[v.length - 1] === q) {
          v = v.slice(1, -1);
          if (q === '"') v = v.replace(/\\n/g, "\n").replace(/\\"/g, '"');
        }
        entries.push({ raw: l.slice(0, eq).trim(), value: v });
      });
    }
    const existing = (form.dataset.existing || "").split(" ");
    const seen = new Set();
    return entries.map((e) => {
      const name = e.raw.toLowerCase();
      let problem = e.problem || "";
      const v = e.value;
      const isKv = v !== null && typeof v === "object" && !Array.isArray(v);
      if (!problem && (!SECRET_NAME.test(name) || name.length > 64)) problem = "not a valid name (a-z, 0-9, _; starting with a letter)";
      else if (!problem && seen.has(name)) problem = "given twice";
      else if (!problem && existing.includes(name)) problem = "a secret of this name exists";
      else if (!problem && isKv && (!Object.keys(v).length || Object.values(v).some((x) => typeof x !== "string" || !x))) problem = "key/value pairs need a string value for every key";
      else if (!problem && !isKv && (typeof v !== "string" || !v)) problem = "the value is empty";
      seen.add(name);
      return { name, value: v, kind: isKv ? "Key/value pairs (" + Object.keys(v).join(", ") + ")" : "Single value", problem };
    });
  }
  function showImportPreview(form, rows) {
    const table = form.querySelector("#import-preview");
    const tbody = table.tBodies[0];
    tbody.replaceChildren();
    rows.forEach((r) => {
      const tr = tbody.insertRow();
      [r.name, r.kind, r.problem || "ready"].forEach((text, i) => {
        const td = tr.insertCell();
        td.textContent = text;
        td.dataset.label = ["Name", "Type", "Check"][i];
        if (i === 2) td.className = r.problem ? "error-text" : "ok-text";
      });
    });
    table.hidden = rows.length === 0;
    const ok = rows.length > 0 && rows.every((r) => !r.problem);
    const button = form.querySelector("[data-import-submit]");
    button.disabled = !ok;
    button.textContent = ok ? "Import " + rows.length + " secret" + (rows.length === 1 ? "" : "s") : "Import";
  }
  document.addEventListener("input", (ev) => {
    const form = ev.target.closest('form[data-form="secret-import"]');
    if (!form) return;
    const slot = form.querySelector('[data-error-for="import"]');
    slot.textContent = "";
    try { showImportPreview(form, importRows(form)); } catch (err) { slot.textContent = err.message; showImportPreview(form, []); }
  });

  // Reloads one part of the page (by id) from the server, e.g. a list after a create.
  async function refresh(id) {
    try {
      const resp = await fetch(window.location.pathname + window.location.search, { credentials: "same-origin" });
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      const fresh = doc.getElementById(id);
      const here = document.getElementById(id);
      if (fresh && here) { here.replaceWith(fresh); showTimes(fresh); }
    } catch (_) { /* the list shows it on the next load */ }
  }

  // The Function Editor's unsaved changes: marked beside Save, and leaving the page asks first.
  function snapshot(form) {
    return JSON.stringify([value(form, "name"), value(form, "description"), value(form, "timeout_ms"),
      value(form, "code"), parameters(form)]);
  }
  let unsavedForm = null;
  let savedState = null;
  function watchUnsaved(form) {
    if (!form) return;
    unsavedForm = form;
    savedState = snapshot(form);
    const mark = form.querySelector("[data-unsaved]");
    // The code editor writes into its textarea without input events: look every half second.
    const testNote = document.querySelector("[data-test-unsaved]");
    const savedNote = document.querySelector("[data-test-note]");
    setInterval(() => {
      const unsaved = isUnsaved();
      if (mark) mark.hidden = !unsaved;
      // Run says which it runs: the saved or deployed version, or (with changes, in sandbox) the draft.
      const env = document.querySelector("[data-test-env]");
      const draft = unsaved && (!env || env.value === "sandbox");
      if (testNote) testNote.hidden = !draft;
      if (savedNote) savedNote.hidden = draft;
    }, 500);
  }
  function isUnsaved() { return unsavedForm !== null && snapshot(unsavedForm) !== savedState; }
  function markSaved() { if (unsavedForm) savedState = snapshot(unsavedForm); }
  window.addEventListener("beforeunload", (ev) => {
    if (!isUnsaved()) return;
    ev.preventDefault();
    ev.returnValue = "";
  });

  // The code editor (CodeMirror, from /assets/editor.js) over the definition's textarea.
  let editor = null;
  window.addEventListener("DOMContentLoaded", () => {
    const ta = document.querySelector("[data-code-editor]");
    if (ta && window.AgentvaultEditor) {
      editor = window.AgentvaultEditor.attach(ta);
      ta.agentvaultEditor = editor;
      watchUnsaved(ta.form);
      // The get_secret calls the agent cannot read, marked at their lines.
      try { if (ta.dataset.marks && editor.mark) editor.mark(JSON.parse(ta.dataset.marks)); } catch (_) { /* no marks */ }
    }
  });

  document.addEventListener("change", (ev) => {
    const el = ev.target;
    if (el.matches("[data-value-kind]")) {
      const form = el.form;
      form.querySelectorAll("[data-kind-panel]").forEach((p) => { p.hidden = p.dataset.kindPanel !== el.value; });
      const tbody = form.querySelector("[data-kv-rows] tbody");
      if (el.value === "kv" && tbody && !tbody.children.length) addPair(tbody);
    }
    if (el.matches("[data-hide-inactive]")) {
      document.querySelectorAll("#" + el.dataset.hideInactive + " tbody tr").forEach((tr) => {
        tr.hidden = el.checked && tr.dataset.status !== "active";
      });
    }
    if (el.matches("[data-scope]")) {
      // "All agents" covers every agent: the choice of agents is off.
      el.form.querySelectorAll('input[name="agents"]').forEach((i) => { i.disabled = el.value !== "chosen"; });
    }
    if (el.matches("[data-switch-workspace]")) {
      window.location.assign("/w/" + el.value + "/agents");
    }
  });

  // The diff between two saved versions of a function: a line diff (longest common subsequence).
  function lineDiff(a, b) {
    const x = a.split("\n");
    const y = b.split("\n");
    const n = x.length;
    const m = y.length;
    const lcs = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
      }
    }
    const out = [];
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { out.push(["same", x[i]]); i++; j++; }
      else if (lcs[i + 1][j] >= lcs[i][j + 1]) { out.push(["del", x[i]]); i++; }
      else { out.push(["add", y[j]]); j++; }
    }
    while (i < n) out.push(["del", x[i++]]);
    while (j < m) out.push(["add", y[j++]]);
    return out;
  }
  function showDiff(box) {
    let versions = [];
    try { versions = JSON.parse(box.dataset.versions || "[]"); } catch (_) { versions = []; }
    const code = (v) => (versions.find((x) => String(x.version) === v) || { code: "" }).code;
    const from = box.querySelector("[data-diff-from]").value;
    const to = box.querySelector("[data-diff-to]").value;
    const pre = box.querySelector("[data-diff-out]");
    pre.textContent = "";
    for (const [kind, line] of lineDiff(code(from), code(to))) {
      const span = document.createElement("span");
      span.className = "diff-" + kind;
      span.textContent = (kind === "add" ? "+ " : kind === "del" ? "- " : "  ") + line + "\n";
      pre.append(span);
    }
  }
  window.addEventListener("DOMContentLoaded", () => document.querySelectorAll("[data-diff]").forEach(showDiff));
  document.addEventListener("change", (ev) => {
    const box = ev.target.closest("[data-diff]");
    if (box) showDiff(box);
    // The Test panel says which version the chosen environment runs.
    if (ev.target.matches("[data-test-env]")) {
      const opt = ev.target.selectedOptions[0];
      const note = ev.target.form.querySelector("[data-test-note]");
      if (!note || !opt) return;
      const env = opt.value;
      note.textContent = !opt.dataset.version
        ? "Nothing is deployed to " + env + ": Run answers not_deployed. Deploy a version first."
        : env === "sandbox"
          ? "Runs the latest saved version (version " + opt.dataset.version + ") with sandbox values."
          : "Runs version " + opt.dataset.version + ", deployed to " + env + ", with " + env + " values.";
    }
  });

  // A masked value: revealed (and audited) on focus, masked again on blur.
  const MASK = "••••••••••••";
  async function fetchValue(input) {
    try {
      const out = await api("POST", input.dataset.reveal);
      return typeof out.value === "string" ? out.value : JSON.stringify(out.value);
    } catch (err) {
      toast(err.message || "the value could not be revealed");
      return null;
    }
  }
  async function reveal(input) {
    if (input.dataset.revealed) return input.value;
    const text = await fetchValue(input);
    // Focus may have moved on meanwhile: only a focused field shows the value.
    if (text !== null && document.activeElement === input) {
      input.value = text;
      input.dataset.revealed = "1";
    }
    return text;
  }
  document.addEventListener("focusin", (ev) => { if (ev.target.matches("[data-reveal]")) reveal(ev.target); });
  document.addEventListener("focusout", (ev) => {
    const el = ev.target;
    if (el.matches("[data-reveal]")) { el.value = MASK; delete el.dataset.revealed; }
  });

  // Times are shown relative ("3 minutes ago"), the exact time on hover.
  function relative(ms) {
    const s = Math.round((Date.now() - ms) / 1000);
    const future = s < 0;
    const a = Math.abs(s);
    const units = [[31536000, "year"], [2592000, "month"], [86400, "day"], [3600, "hour"], [60, "minute"]];
    if (a < 45) return future ? "in a few seconds" : "just now";
    for (const [size, name] of units) {
      if (a >= size) {
        const n = Math.round(a / size);
        const text = n + " " + name + (n === 1 ? "" : "s");
        return future ? "in " + text : text + " ago";
      }
    }
    return future ? "in a minute" : "a minute ago";
  }
  function showTimes(root) {
    root.querySelectorAll("time[datetime]").forEach((t) => {
      const ms = Date.parse(t.getAttribute("datetime"));
      if (Number.isNaN(ms)) return;
      t.title = new Date(ms).toLocaleString() + " (" + t.getAttribute("datetime") + ")";
      t.textContent = relative(ms);
    });
  }
  window.addEventListener("DOMContentLoaded", () => showTimes(document));

  // A short confirmation after a change that loaded a new page (`?notice=`), dismissable; the
  // parameter leaves the address bar so a reload does not show it again.
  function notify(text) {
    const main = document.querySelector("main");
    if (!main || !text) return;
    const box = document.createElement("div");
    box.className = "notice flash";
    box.setAttribute("role", "status");
    box.id = "notice";
    const span = document.createElement("span");
    span.textContent = text;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "link";
    close.textContent = "Dismiss";
    close.setAttribute("aria-label", "Dismiss this notice");
    close.addEventListener("click", () => box.remove());
    box.append(span, close);
    main.prepend(box);
  }
  window.addEventListener("DOMContentLoaded", () => {
    const url = new URL(window.location.href);
    const text = url.searchParams.get("notice");
    if (text === null) return;
    url.searchParams.delete("notice");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    notify(text);
  });
  const withNotice = (path, text) => path + (path.includes("?") ? "&" : "?") + "notice=" + encodeURIComponent(text);

  function toast(text) {
    const t = document.getElementById("toast");
    if (!t) return;
    t.textContent = text;
    setTimeout(() => { if (t.textContent === text) t.textContent = ""; }, 2500);
  }
})();
