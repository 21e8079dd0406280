// The inputs of tables and ratings on the page of `threeline serve` (app.js calls setUpRows or
// setUpUser with GET /model's answer): a form built from a table's columns (a list of categories
// for a categorical column, a number for a continuous one) whose row goes to POST /predict as
// {"rows": [row]}; a user picker whose choice goes as {"user": id, "k": k}.
"use strict";

function field(column) {
  const label = document.createElement("label");
  label.className = "field";
  const name = document.createElement("span");
  name.textContent = column.name;
  let input;
  if (column.kind === "categorical") {
    input = document.createElement("select");
    column.categories.forEach((category, i) => input.add(new Option(String(category), String(i))));
    input.add(new Option("(missing)", ""));
  } else {
    input = document.createElement("input");
    input.type = column.kind === "date" ? "date" : "number";
    if (column.kind === "continuous") input.step = "any";
    if (column.typical !== null && column.typical !== undefined) input.value = column.typical;
  }
  input.name = column.name;
  input.dataset.kind = column.kind;
  label.append(name, input);
  return label;
}

function readRow(columns) {
  // the form's row: the category itself (text or number), a number, a date text, or null
  const row = {};
  columns.forEach((column) => {
    const input = $("row-form").elements.namedItem(column.name);
    if (input.value === "") row[column.name] = null;
    else if (column.kind === "categorical") row[column.name] = column.categories[+input.value];
    else if (column.kind === "continuous") row[column.name] = parseFloat(input.value);
    else row[column.name] = input.value;
  });
  return row;
}

function rowName(row) {
  const text = Object.entries(row).map(([k, v]) => `${k} ${v === null ? "–" : v}`).join(", ");
  return text.length > 90 ? `${text.slice(0, 90)}…` : text;
}

function showValue(card, name, value) {
  const p = document.createElement("p");
  p.className = "value";
  p.textContent = `${name}: ${Number(value.toPrecision(6))}`;
  card.querySelector(".labels").replaceChildren(p);
}

function setUpRows(info, facts) {
  const columns = info.columns;
  fact(facts, "columns", columns.length);
  fact(facts, "target", `${info.target.name} (${info.target.task})`);
  $("row-form").replaceChildren(...columns.map(field));
  $("row-form").addEventListener("submit", (e) => e.preventDefault());
  $("rows-submit").addEventListener("click", () => {
    showError("");
    const row = readRow(columns);
    const card = newCard(rowName(row));
    card.topBox = $("rows-top-k");
    post(JSON.stringify({ rows: [row] }), true)
      .then((answer) => {
        const result = answer.predictions[0];
        card.result = result.top ? result : null;
        if (result.top) drawLabels(card);
        else showValue(card, info.target.name, result.value);
        card.dataset.state = "done";
      })
      .catch((err) => fail(card, err.message));
  });
  $("rows-top-k").addEventListener("input", () => {
    document.querySelectorAll(".card").forEach((card) => card.result && drawLabels(card));
  });
}

function showRecommendations(card, items) {
  const list = document.createElement("ol");
  list.className = "recs";
  list.replaceChildren(...items.map(({ item, title, predicted }) => {
    const li = document.createElement("li");
    li.dataset.item = item;
    const name = document.createElement("span");
    name.className = "title";
    name.textContent = title;
    const rating = document.createElement("span");
    rating.className = "rating";
    rating.textContent = predicted.toFixed(2);
    li.append(rating, name); // floated right, level with the title's first line
    return li;
  }));
  card.querySelector(".labels").replaceChildren(list);
}

function setUpUser(info, facts) {
  fact(facts, "users", info.n_users.toLocaleString());
  fact(facts, "items", info.n_items.toLocaleString());
  if (info.rating_range) fact(facts, "ratings", info.rating_range.join(" – "));
  $("user-list").replaceChildren(...info.users.map((user) => new Option(String(user))));
  $("user-k").max = info.limits.max_k;
  if (info.users.length) $("user-box").placeholder = `e.g. ${info.users[0]}`;
  const ask = () => {
    showError("");
    const user = $("user-box").value.trim();
    if (!user) return;
    const k = parseInt($("user-k").value, 10) || 10;
    const card = newCard(`user ${user} · top ${k}`);
    post(JSON.stringify({ user, k }), true)
      .then((answer) => {
        showRecommendations(card, answer.predictions[0].items);
        card.dataset.state = "done";
      })
      .catch((err) => fail(card, err.message));
  };
  $("user-submit").addEventListener("click", ask);
  $("user-box").addEventListener("keydown", (e) => { if (e.key === "Enter") ask(); });
}
