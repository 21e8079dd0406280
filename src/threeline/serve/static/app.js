// The page of `threeline serve`: shows the model, picks the input widget from its description's
// "application", sends each input to POST /predict and draws the labels (and heat maps).
// The form of a table and the user picker of a ratings model are in records.js.
"use strict";

const MAX_IN_FLIGHT = 4;   // requests sent at once; the server batches them together
const ASK_TOP_K = 20;      // labels asked for; the "labels shown" box picks how many to draw
const $ = (id) => document.getElementById(id);

let queue = [];
let inFlight = 0;

function showError(message) {
  const box = $("page-error");
  box.textContent = message;
  box.hidden = !message;
}

function fact(list, name, value) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = name;
  dd.textContent = value;
  list.append(dt, dd);
}

async function loadModel() {
  let info;
  try {
    const response = await fetch("/model");
    info = await response.json();
    if (!response.ok) throw new Error(info.error || response.statusText);
  } catch (err) {
    showError(`Could not read the model's description: ${err.message}`);
    return;
  }
  document.title = `${info.name} · threeline serve`;
  $("model-name").textContent = info.name;
  const facts = $("model-facts");
  facts.replaceChildren();
  fact(facts, "architecture", info.arch);
  if (info.classes.length) fact(facts, "classes", info.classes.length);
  if (Array.isArray(info.input_size)) fact(facts, "input size", info.input_size.slice(-2).join(" × "));
  if (info.valid_accuracy !== null) {
    fact(facts, "validation accuracy", `${(100 * info.valid_accuracy).toFixed(2)} %`);
  }
  if (info.valid_rmse !== null && info.valid_rmse !== undefined) {
    fact(facts, "validation RMSE", info.valid_rmse.toFixed(4));
  }
  fact(facts, "epochs", info.epochs);
  const shown = info.classes.slice(0, 30).join(", ");
  $("model-classes").textContent =
    shown + (info.classes.length > 30 ? `, … ${info.classes.length - 30} more` : "");
  const widgets = { image: "image-input", text: "text-input", rows: "rows-input", user: "user-input" };
  const widget = widgets[info.input] || "unsupported-input";
  if (info.input === "rows") setUpRows(info, facts);
  if (info.input === "user") setUpUser(info, facts);
  $("application-name").textContent = info.application;
  $(widget).hidden = false;
  pollHealth();
}

async function pollHealth() {
  const status = $("model-status");
  try {
    const response = await fetch("/health");
    const health = await response.json();
    status.dataset.state = health.status;
    status.textContent = health.status === "ok"
      ? `ready on ${health.device}` : health.status + (health.error ? `: ${health.error}` : "");
    if (health.status === "loading") setTimeout(pollHealth, 1000);
  } catch (err) {
    status.dataset.state = "failed";
    status.textContent = `server unreachable (${err.message})`;
    setTimeout(pollHealth, 3000);
  }
}

function newCard(name) {
  const card = document.createElement("article");
  card.className = "card";
  card.dataset.state = "pending";
  const label = document.createElement("p");
  label.className = "name";
  label.textContent = name;
  const labels = document.createElement("div");
  labels.className = "labels";
  card.append(label, labels);
  $("results").prepend(card);
  return card;
}

function drawLabels(card) {
  const top = card.result ? card.result.top : [];
  const box = card.topBox || $("top-k");
  const shown = top.slice(0, Math.max(1, parseInt(box.value, 10) || 3));
  const labels = card.querySelector(".labels");
  labels.replaceChildren(...shown.map(({ label, probability }) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    const name = document.createElement("span");
    name.className = "label-name";
    name.textContent = label;
    const value = document.createElement("span");
    value.className = "probability";
    value.textContent = `${(100 * probability).toFixed(1)} %`;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${(100 * probability).toFixed(2)}%`;
    track.append(fill);
    bar.append(name, value, track);
    return bar;
  }));
}

function fail(card, message) {
  card.dataset.state = "error";
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = message;
  card.querySelector(".labels").replaceChildren(p);
}

async function post(body, json) {
  // POST /predict, retrying while the model loads or the server is busy (503 + Retry-After)
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(`/predict?top_k=${ASK_TOP_K}&heatmap=1`, {
      method: "POST",
      body,
      headers: json ? { "Content-Type": "application/json" } : undefined,
    });
    let answer;
    try {
      answer = await response.json();
    } catch (err) {
      throw new Error(`HTTP ${response.status}: the answer was not JSON`);
    }
    if (response.ok) return answer;
    const wait = parseFloat(response.headers.get("Retry-After") || "");
    if (response.status === 503 && wait && attempt < 120) {
      await new Promise((resolve) => setTimeout(resolve, 1000 * wait));
      continue;
    }
    throw new Error(answer.error || `HTTP ${response.status}`);
  }
}

function addImage(file) {
  const card = newCard(file.name || "pasted image");
  const picture = document.createElement("div");
  picture.className = "picture";
  const photo = document.createElement("img");
  photo.className = "photo";
  photo.alt = file.name || "pasted image";
  photo.src = URL.createObjectURL(file);
  picture.append(photo);
  card.prepend(picture);
  queue.push({ card, file });
  pump();
}

function pump() {
  while (inFlight < MAX_IN_FLIGHT && queue.length) {
    const { card, file } = queue.shift();
    inFlight++;
    const form = new FormData();
    form.append("file", file, file.name || "pasted.png");
    post(form, false)
      .then((answer) => showImageResult(card, answer.predictions[0]))
      .catch((err) => fail(card, err.message))
      .finally(() => { inFlight--; pump(); });
  }
}

function showImageResult(card, result) {
  card.result = result;
  drawLabels(card);
  if (result.heatmap) {
    const box = result.heatmap_box;
    const overlay = document.createElement("img");
    overlay.className = "heatmap";
    overlay.alt = `heat map for ${result.label}`;
    overlay.style.left = `${100 * box.left}%`;
    overlay.style.top = `${100 * box.top}%`;
    overlay.style.width = `${100 * box.width}%`;
    overlay.style.height = `${100 * box.height}%`;
    overlay.addEventListener("load", () => { card.dataset.heatmap = "loaded"; });
    overlay.src = result.heatmap;
    card.querySelector(".picture").append(overlay);
  }
  card.dataset.state = "done";
}

function addFiles(files) {
  showError("");
  const images = [...files].filter((f) => f.type.startsWith("image/") || f.type === "");
  if (files.length && !images.length) showError("Those are not images.");
  images.forEach(addImage);
}

function setUpImages() {
  const zone = $("drop-zone");
  const input = $("file-input");
  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    addFiles(e.dataTransfer.files);
  });
  document.addEventListener("paste", (e) => {
    if ($("image-input").hidden) return;
    const files = [...(e.clipboardData ? e.clipboardData.items : [])]
      .filter((item) => item.kind === "file" && item.type.startsWith("image/"))
      .map((item) => item.getAsFile());
    if (files.length) addFiles(files);
  });
  const toggle = $("show-heatmap");
  const apply = () => $("results").classList.toggle("hide-heatmaps", !toggle.checked);
  toggle.addEventListener("change", apply);
  apply();
  $("top-k").addEventListener("input", () => {
    document.querySelectorAll(".card").forEach((card) => card.result && drawLabels(card));
  });
  $("clear").addEventListener("click", () => {
    document.querySelectorAll(".card .photo").forEach((img) => URL.revokeObjectURL(img.src));
    $("results").replaceChildren();
  });
}

function setUpText() {
  $("text-submit").addEventListener("click", () => {
    const text = $("text-box").value.trim();
    if (!text) return;
    const card = newCard(text.length > 80 ? `${text.slice(0, 80)}…` : text);
    card.topBox = $("text-top-k");
    post(JSON.stringify({ texts: [text] }), true)
      .then((answer) => {
        card.result = answer.predictions[0];
        drawLabels(card);
        card.dataset.state = "done";
      })
      .catch((err) => fail(card, err.message));
  });
  $("text-top-k").addEventListener("input", () => {
    document.querySelectorAll(".card").forEach((card) => card.result && drawLabels(card));
  });
}

setUpImages();
setUpText();
loadModel();
