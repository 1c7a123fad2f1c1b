// The console's live parts: forms that call the JSON API, the live event stream (with resume),
// and the project page's panels, re-rendered by the server when events arrive. No build step.
"use strict";

const body = document.body;
const csrfHeader = body.dataset.csrfHeader;

function flash(text, isError = true) {
  const box = document.getElementById("flash");
  if (!box) return;
  box.textContent = text;
  box.className = isError ? "flash error" : "flash";
  box.hidden = !text;
}

// A JSON API call with the console's cookie and the header that proves it comes from this page.
async function api(method, url, payload) {
  const headers = { Accept: "application/json", [csrfHeader]: "1" };
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    credentials: "same-origin",
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  if (response.status === 401) {
    window.location.assign("/login");
    throw new Error("signed out");
  }
  const data = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((data && data.detail) || `${response.status} ${response.statusText}`);
  return data;
}

function busy(form, on) {
  for (const button of form.querySelectorAll("button")) button.disabled = on;
}

// -- projects list: create a project and start its workflow ------------------------------------
const createForm = document.getElementById("create-project");
if (createForm) {
  createForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(createForm);
    busy(createForm, true);
    try {
      const idea = form.get("idea").trim();
      const project = await api("POST", "/api/v1/projects", {
        name: form.get("name").trim(),
        description: idea,
        oversight_level: form.get("oversight_level"),
      });
      await api("POST", "/api/v1/executions", {
        project_id: project.id,
        workflow_id: form.get("workflow_id"),
        inputs: { idea },
      });
      window.location.assign(`/projects/${project.id}`);
    } catch (error) {
      flash(error.message);
      busy(createForm, false);
    }
  });
}

// -- project page -------------------------------------------------------------------------------
const projectId = body.dataset.projectId;
const eventsList = document.getElementById("events");

function summary(event) {
  const data = event.data || {};
  const parts = [];
  for (const key of ["agent_type", "phase", "step", "status", "question", "text", "title", "error"]) {
    const value = data[key];
    if (value !== undefined && value !== null && value !== "") parts.push(String(value));
  }
  const text = parts.join(" · ");
  return text.length > 160 ? `${text.slice(0, 157)}…` : text;
}

let refreshTimer = null;
function refreshPanels() {
  // Many events come in bursts: one re-render after the burst.
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    try {
      const response = await fetch(`/projects/${projectId}/panels`, { credentials: "same-origin" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const section of fresh.querySelectorAll("section[id]")) {
        const current = document.getElementById(section.id);
        if (current) current.replaceWith(document.importNode(section, true));
      }
    } catch (error) {
      // The next event tries again.
    }
  }, 300);
}

function addChat(event) {
  const chat = document.getElementById("chat");
  if (!chat) return;
  const data = event.data || {};
  const mine = event.event_type === "user_chat_message";
  const item = document.createElement("li");
  item.className = mine ? "mine" : "theirs";
  const who = document.createElement("b");
  who.textContent = mine ? "you" : data.agent_type || "orchestrator";
  item.append(who, ` ${data.text || ""}`);
  chat.append(item);
  chat.scrollTop = chat.scrollHeight;
}

function showEvent(event) {
  const item = document.createElement("li");
  item.dataset.eventType = event.event_type;
  const time = document.createElement("span");
  time.className = "muted small";
  time.textContent = new Date(event.timestamp).toLocaleTimeString();
  const name = document.createElement("b");
  name.textContent = event.event_type.replaceAll("_", " ");
  const text = document.createElement("span");
  text.textContent = summary(event);
  item.append(time, " ", name, " ", text);
  eventsList.prepend(item);
  while (eventsList.children.length > 200) eventsList.lastElementChild.remove();
}

function setLiveState(text, state) {
  const badge = document.getElementById("live-state");
  if (!badge) return;
  badge.textContent = text;
  badge.className = `badge ${state}`;
}

// The project's stream: the last events first, then live; after a drop, resume after the last id.
function connect(lastId, delay) {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const start = lastId === null ? "last=30" : `after=${lastId}`;
  const socket = new WebSocket(`${scheme}://${window.location.host}/ws/projects/${projectId}?${start}`);
  socket.addEventListener("open", () => {
    delay = 500;
    setLiveState("live", "running");
  });
  socket.addEventListener("message", (message) => {
    const event = JSON.parse(message.data);
    if (event.event_type === "heartbeat" || event.event_type === "message_accepted") return;
    if (event.event_type === "error") {
      flash(event.detail);
      return;
    }
    if (event.id === null || event.id === undefined) return; // live-only output deltas
    if (lastId !== null && event.id <= lastId) return;
    lastId = event.id;
    showEvent(event);
    if (event.event_type.endsWith("chat_message")) addChat(event);
    refreshPanels();
  });
  socket.addEventListener("close", (closed) => {
    if (closed.code === 4401) {
      window.location.assign("/login");
      return;
    }
    if (closed.code === 4404 || closed.code === 4400) {
      setLiveState(closed.reason || "closed", "failed");
      return;
    }
    setLiveState("reconnecting", "waiting");
    setTimeout(() => connect(lastId, Math.min(delay * 2, 10000)), delay);
  });
}

if (projectId && eventsList) {
  connect(null, 500);
}

const chatForm = document.getElementById("chat-form");
if (chatForm) {
  chatForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = chatForm.elements.message;
    busy(chatForm, true);
    try {
      await api("POST", `/api/v1/projects/${projectId}/messages`, { message: input.value });
      input.value = "";
    } catch (error) {
      flash(error.message);
    }
    busy(chatForm, false);
  });
}

// -- a HITL request: approve, reject or amend ----------------------------------------------------
const hitlForm = document.getElementById("hitl-form");
if (hitlForm) {
  const choice = hitlForm.elements.artifact_id;
  const editors = hitlForm.querySelectorAll(".amend-content");
  const editorFor = (id) => [...editors].find((editor) => editor.dataset.artifactId === id);
  if (choice && choice.tagName === "SELECT") {
    choice.addEventListener("change", () => {
      for (const editor of editors) editor.hidden = editor.dataset.artifactId !== choice.value;
    });
  }
  hitlForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = event.submitter ? event.submitter.value : "approve";
    const comment = hitlForm.elements.comment.value.trim();
    const answer = { action };
    if (comment) answer.comment = comment;
    if (action === "amend") {
      const editor = editorFor(choice.value);
      const text = editor.value;
      try {
        const parsed = JSON.parse(text);
        answer.amended_content = typeof parsed === "object" && parsed !== null ? parsed : text;
      } catch (error) {
        answer.amended_content = text;
      }
      answer.response = { artifact_id: choice.value };
    }
    busy(hitlForm, true);
    try {
      await api("POST", `/api/v1/hitl/${body.dataset.requestId}/respond`, answer);
      window.location.assign(`/projects/${body.dataset.projectId}`);
    } catch (error) {
      flash(error.message);
      busy(hitlForm, false);
    }
  });
}
