// The page of `ssd serve`: send a picture to /v1/detect once, then draw and list its detections; the score
// slider only filters what came back (the request asks for everything above a low score).
"use strict";

const REQUEST_SCORE = 0.05;
const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d");
const slider = document.getElementById("score");
const sliderValue = document.getElementById("score-value");
const list = document.getElementById("detections");
const statusLine = document.getElementById("status");
const drop = document.getElementById("drop");
let picture = null;
let detections = [];

let colours = [];  // the server's class colours (/v1/model), as in the run folder's pictures

// One colour per class, the same for a class on every picture.
function classColour(label) {
  return colours[label - 1] || `hsl(${(label * 137.508) % 360}, 85%, 45%)`;
}

function say(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function draw() {
  const lowest = Number(slider.value);
  sliderValue.textContent = lowest.toFixed(2);
  list.replaceChildren();
  if (!picture) return;
  canvas.width = picture.width;
  canvas.height = picture.height;
  context.drawImage(picture, 0, 0);
  const lineWidth = Math.max(2, Math.round(Math.max(picture.width, picture.height) / 300));
  const fontSize = Math.max(12, lineWidth * 6);
  context.font = `${fontSize}px system-ui, sans-serif`;
  const shown = detections.filter((d) => d.score >= lowest);
  for (const d of shown) {
    const [x1, y1, x2, y2] = d.box;
    const colour = classColour(d.label);
    context.lineWidth = lineWidth;
    context.strokeStyle = colour;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${d.name} ${d.score.toFixed(2)}`;
    const textWidth = context.measureText(text).width + 6;
    const top = y1 >= fontSize + 4 ? y1 - fontSize - 4 : y1;
    context.fillStyle = colour;
    context.fillRect(x1, top, textWidth, fontSize + 4);
    context.fillStyle = "#fff";
    context.fillText(text, x1 + 3, top + fontSize);

    const item = document.createElement("li");
    item.className = "detection";
    item.dataset.label = d.label;
    item.dataset.score = d.score;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour;
    item.append(swatch, `${d.name} ${d.score.toFixed(2)}`);
    list.append(item);
  }
  say(`${shown.length} of ${detections.length} detections at score ≥ ${lowest.toFixed(2)}`);
}

async function detect(file) {
  say(`detecting on ${file.name}…`);
  const form = new FormData();
  form.append("image", file);
  let answer;
  try {
    const response = await fetch(`/v1/detect?score=${REQUEST_SCORE}`, { method: "POST", body: form });
    answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
  } catch (error) {
    detections = [];
    picture = null;
    list.replaceChildren();
    say(`${file.name}: ${error.message}`, true);
    return;
  }
  const shownPicture = await createImageBitmap(file, { imageOrientation: "from-image" });
  picture = shownPicture;
  detections = answer.detections;
  draw();
  document.body.dataset.detected = String(detections.length);
}

document.getElementById("file").addEventListener("change", (event) => {
  if (event.target.files.length) detect(event.target.files[0]);
});
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) detect(event.dataTransfer.files[0]);
});
slider.addEventListener("input", draw);

fetch("/v1/model")
  .then((response) => response.json())
  .then((model) => {
    colours = model.colours || [];
    document.getElementById("model").textContent = model.error
      ? model.error
      : `${model.arch} · ${model.file} · ${model.backend} ${model.precision} · ${model.classes ? model.classes.length : model.num_classes - 1} classes`;
  })
  .catch(() => { document.getElementById("model").textContent = "the model description is unavailable"; });
