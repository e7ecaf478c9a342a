// lineside web: live cards and status by server-sent events, review keyboard shortcuts.
"use strict";

function liveCards() {
  const cards = document.getElementById("cards");
  if (!cards) return;
  const max = parseInt(cards.dataset.max || "12", 10);
  const only = document.getElementById("rejects-only");
  if (only) {
    only.addEventListener("change", () => {
      const url = new URL(window.location.href);
      if (only.checked) url.searchParams.set("only", "rejects");
      else url.searchParams.delete("only");
      window.location.assign(url.toString());
    });
  }
  const source = new EventSource(cards.dataset.events);
  source.addEventListener("cards", (ev) => {
    const holder = document.createElement("div");
    holder.innerHTML = ev.data;
    const fresh = Array.from(holder.children);
    for (const card of fresh) {
      const old = document.getElementById(card.id);
      if (old) old.remove();
      cards.prepend(card);
    }
    while (cards.children.length > max) cards.lastElementChild.remove();
  });
  source.addEventListener("status", (ev) => {
    const s = JSON.parse(ev.data);
    for (const [id, text] of Object.entries(s.fields)) {
      const el = document.getElementById(id);
      if (el) el.textContent = text;
    }
    const state = document.getElementById("node-state");
    if (state) {
      state.textContent = s.state_text;
      state.className = "state " + s.state_css;
    }
  });
}

function reviewKeys() {
  const items = Array.from(document.querySelectorAll(".queue .item"));
  if (!items.length) return;
  let at = 0;
  const focus = (i) => {
    at = Math.max(0, Math.min(items.length - 1, i));
    items[at].focus();
    items[at].scrollIntoView({ block: "nearest" });
  };
  focus(0);
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement) return;
    const item = items[at];
    const form = item.querySelector("form.review");
    if (ev.key === "j") focus(at + 1);
    else if (ev.key === "k") focus(at - 1);
    else if (ev.key === "c" && form) form.querySelector("button.confirm").click();
    else if (ev.key === "o" && form) form.querySelector("details.override").open = true;
    else if (/^[1-9]$/.test(ev.key) && form) {
      const details = form.querySelector("details.override");
      const reasons = form.querySelectorAll("button.reason");
      const n = parseInt(ev.key, 10) - 1;
      if (details.open && n < reasons.length) reasons[n].click();
    } else return;
    ev.preventDefault();
  });
}

function trendsHours() {
  const hours = document.getElementById("hours");
  if (hours) hours.addEventListener("change", () => hours.form.submit());
}

document.addEventListener("DOMContentLoaded", () => {
  liveCards();
  reviewKeys();
  trendsHours();
});
