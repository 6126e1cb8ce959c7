// nstyle's page: plain JavaScript, no framework and no CDN (the server may be offline).
// Everything goes through the JSON API under /api; the event stream is read with fetch()
// rather than EventSource because EventSource cannot send the bearer token.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) if (c != null) node.append(c);
  return node;
};

const state = {
  token: sessionStorage.getItem("nstyle-token"),
  info: null,
  content: null,        // File
  contentSize: null,    // [width, height] of the picked photo (for the mask painter)
  styles: [],           // [{file: File, mask: File|null}]
  extras: new Map(),    // input field (keep_mask, init_image, ...) -> File
  controls: new Map(),  // option name -> () => value string ("" = default)
  setters: new Map(),   // option name -> (value string) => void
  job: null,            // the job shown on the stage
  stream: null,         // AbortController of its event stream
  points: [],           // the shown job's loss history: {iteration, scale, losses}
  objectUrls: [],
};

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, detail, field, index) {
    super(detail);
    Object.assign(this, { status, field, index });
  }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    await askToken();
    return api(path, options);
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`, field = null, index = null;
    try {
      const body = await response.json();
      if (typeof body.detail === "string") detail = body.detail;
      else if (Array.isArray(body.detail)) detail = body.detail.map((d) => d.msg).join("; ");
      field = body.field ?? null;
      index = body.index ?? null;
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, detail, field, index);
  }
  return response;
}

const apiJson = async (path, options) => (await api(path, options)).json();

// Images behind a token cannot be plain <img src> URLs: fetch them as blobs instead.
async function imageUrl(path) {
  if (!state.token) return path;
  const blob = await (await api(path)).blob();
  const url = URL.createObjectURL(blob);
  state.objectUrls.push(url);
  return url;
}

function askToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    $("token-form").onsubmit = () => {
      state.token = $("token-input").value.trim();
      sessionStorage.setItem("nstyle-token", state.token);
      resolve();
    };
    if (!dialog.open) dialog.showModal();
  });
}

// ---------------------------------------------------------------- formatting

const fmtSci = (x) => {
  if (!isFinite(x)) return String(x);
  if (x === 0) return "0";
  const e = Math.floor(Math.log10(Math.abs(x)));
  if (e >= -2 && e <= 4) return Number(x.toPrecision(3)).toLocaleString("en");
  return `${(x / 10 ** e).toFixed(1)}e${e}`;
};
const fmtTime = (s) => {
  if (s == null || !isFinite(s)) return "";
  s = Math.max(0, Math.round(s));
  const m = Math.floor(s / 60), r = s % 60;
  return m ? `${m} min ${String(r).padStart(2, "0")} s` : `${r} s`;
};
const fmtAgo = (iso) => {
  if (!iso) return "";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
};
const fmtBytes = (n) => (n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MB` : `${Math.ceil(n / 1024)} kB`);

// ---------------------------------------------------------------- refusals, next to their field

// where a refusal about a form field is shown (the server names the field)
function errorBox(field) {
  if (!field) return null;
  if (field === "content") return $("err-content");
  if (["style", "styles", "style_mask", "style_masks", "style_blend_weights"].includes(field)) return $("err-style");
  const box = $(`err-${field}`);
  if (box && box.closest("details")) box.closest("details").open = true;
  return box;
}

// the server refused a job: the reason at its field, and beside the Stylize button
function showRefusal(message, field, index) {
  const box = showAtField(message, field, index);
  showFormError(box ? `The job was not started: ${message}` : message);
}

// a file refused as it is picked: nothing was started, so only its field says why
function refuseFile(message, field, index) {
  if (!showAtField(message, field, index)) showFormError(message);
}

function showAtField(message, field, index) {
  const box = errorBox(field);
  if (box) {
    const which = field && field.startsWith("style") && index != null && state.styles.length > 1
      ? ` (style ${index + 1})` : "";
    box.textContent = message + which;
    box.hidden = false;
    // centred: at the bottom of the screen it would hide behind the sticky Stylize bar
    (box.closest(".control, .step") || box).scrollIntoView({ block: "center", behavior: "smooth" });
  }
  return box;
}

function clearError(field) {
  const box = errorBox(field);
  if (box) box.hidden = true;
  $("form-error").hidden = true;
}

function clearAllErrors() {
  for (const box of document.querySelectorAll(".field-error")) box.hidden = true;
  $("form-error").hidden = true;
}

function showFormError(message) {
  const box = $("form-error");
  box.textContent = message;
  box.hidden = false;
}

// ---------------------------------------------------------------- options

// The few options that get a slider; the rest are generated from GET /api/info, so a new
// engine option shows up here without touching the page.
const MAIN_OPTIONS = [
  { name: "style_weight", kind: "log", min: 1, max: 8, step: 0.1,
    help: "how strongly the painting's texture wins over the photo's content" },
  { name: "size", kind: "range", min: 64, step: 32, unit: "px" },
  { name: "iterations", kind: "range", min: 10, max: 1000, step: 10,
    help: "more iterations refine the image further; the time grows with them" },
];
const MAIN_SELECTS = ["preserve_colors"];

function buildControls(info) {
  const options = new Map(info.options.map((o) => [o.name, o]));
  const main = $("main-controls");
  const used = new Set();
  for (const spec of MAIN_OPTIONS) {
    const opt = options.get(spec.name);
    if (!opt) continue;
    used.add(spec.name);
    main.append(sliderControl(spec, opt, info));
  }
  for (const name of MAIN_SELECTS) {
    if (!options.has(name)) continue;
    used.add(name);
    main.append(genericControl(options.get(name)));
  }
  const advanced = $("advanced-controls");
  const groups = new Map();
  for (const opt of info.options) {
    if (used.has(opt.name)) continue;
    if (!groups.has(opt.section_label)) {
      const grid = el("div", { className: "grid-options" });
      groups.set(opt.section_label, grid);
      advanced.append(el("h4", { textContent: opt.section_label }), grid);
    }
    groups.get(opt.section_label).append(genericControl(opt));
  }
  buildExtraImages(info);
}

function sliderControl(spec, opt, info) {
  const id = `opt-${spec.name}`;
  const input = el("input", { type: "range", id, step: spec.step });
  const out = el("output", { htmlFor: id });
  let max = spec.max;
  let help = spec.help || opt.help;
  if (spec.name === "size") {
    max = info.limits.max_size;
    help = `longest side of the output (this server allows up to ${max} px); larger is slower`;
  }
  if (spec.name === "iterations") max = Math.min(max, info.limits.max_iterations);
  input.min = spec.min;
  input.max = max;
  const toValue = () => (spec.kind === "log" ? Number((10 ** Number(input.value)).toPrecision(2)) : Number(input.value));
  const show = () => {
    const v = toValue();
    out.value = spec.kind === "log" ? fmtSci(v) : `${v}${spec.unit ? " " + spec.unit : ""}`;
  };
  const set = (value) => {
    const v = Number(value);
    input.value = spec.kind === "log" ? Math.log10(v) : Math.min(Math.max(v, spec.min), max);
    show();
  };
  set(opt.default);
  input.addEventListener("input", () => { show(); clearError(spec.name); updateEstimate(); });
  state.controls.set(spec.name, () => String(toValue()));
  state.setters.set(spec.name, set);
  return el("div", { className: "control" },
    el("label", { htmlFor: id }, el("span", { textContent: opt.label }), out),
    input,
    el("div", { className: "help", textContent: help }),
    el("p", { className: "field-error", id: `err-${spec.name}`, role: "alert", hidden: true }));
}

function genericControl(opt) {
  const id = `opt-${opt.name}`;
  const wrap = el("div", { className: "control" });
  let get, set, input;
  if (opt.choices) {
    input = el("select", { id });
    for (const c of opt.choices) {
      input.append(el("option", { value: c, textContent: c === opt.default ? `${c} (default)` : c }));
    }
    input.value = opt.default ?? "";
    get = () => (input.value === String(opt.default) ? "" : input.value);
    set = (v) => { input.value = v; };
  } else {
    const shown = Array.isArray(opt.default) ? opt.default.join(",") : opt.default;
    input = el("input", { type: "text", id, spellcheck: false,
      placeholder: shown == null ? "automatic" : String(shown) });
    get = () => input.value.trim();
    set = (v) => { input.value = v; };
  }
  input.addEventListener("input", () => { clearError(opt.name); updateEstimate(); });
  const help = opt.default_text && opt.default == null ? `${opt.help}. Empty: ${opt.default_text}` : opt.help;
  wrap.append(el("label", { htmlFor: id, textContent: opt.label }), input,
    el("div", { className: "help", textContent: help }),
    el("p", { className: "field-error", id: `err-${opt.name}`, role: "alert", hidden: true }));
  state.controls.set(opt.name, get);
  state.setters.set(opt.name, set);
  return wrap;
}

// the keep mask, starting image and scale-mixing pair: one upload each
function buildExtraImages(info) {
  const box = $("extra-images");
  const grid = el("div", { className: "grid-options" });
  box.append(el("h4", { textContent: "More images" }), grid);
  for (const field of info.inputs.filter((f) => !f.per_style)) {
    const input = el("input", { type: "file", accept: "image/*", id: `file-${field.name}`, hidden: true });
    const name = el("span", { className: "file-name", textContent: "none" });
    const remove = el("button", { type: "button", className: "ghost btn-small", textContent: "Remove", hidden: true });
    const pick = el("label", { className: "button ghost btn-small", htmlFor: input.id, textContent: "Choose…" });
    const render = () => {
      const file = state.extras.get(field.name);
      name.textContent = file ? file.name : "none";
      remove.hidden = !file;
      updateStart();
    };
    input.onchange = async () => {
      const file = input.files[0];
      input.value = "";
      clearError(field.name);
      if (!file || !(await acceptFile(file, field.name))) return;
      state.extras.set(field.name, file);
      render();
    };
    remove.onclick = () => { state.extras.delete(field.name); render(); };
    state.setters.set(`file:${field.name}`, (file) => { if (file) state.extras.set(field.name, file); else state.extras.delete(field.name); render(); });
    grid.append(el("div", { className: "control" },
      el("label", { htmlFor: input.id, textContent: field.label }),
      el("div", { className: "file-row" }, input, pick, name, remove),
      el("div", { className: "help", textContent: field.help }),
      el("p", { className: "field-error", id: `err-${field.name}`, role: "alert", hidden: true })));
  }
}

// ---------------------------------------------------------------- picking images

const IMAGE_NAME = /\.(png|jpe?g|webp|bmp|tiff?|gif)$/i;
const isImage = (file) => file && (file.type.startsWith("image/") || IMAGE_NAME.test(file.name));

// formats a browser cannot draw (the server still reads them): not decoded here
const UNDRAWABLE = /\.(tiff?)$/i;

// whether the browser can decode the file as a picture (a text file named .jpg cannot)
async function decodes(file) {
  if (file.type === "image/tiff" || UNDRAWABLE.test(file.name)) return true;
  try {
    const bitmap = await createImageBitmap(file);
    bitmap.close();
    return true;
  } catch (_) {
    return false;
  }
}

// a file the server would refuse is refused here too, at once and next to its field
async function acceptFile(file, field, index) {
  const formats = state.info ? state.info.limits.formats.join(", ") : "png, jpeg, webp";
  if (!isImage(file)) {
    refuseFile(`${file.name} is not an image (this server takes ${formats})`, field, index);
    return false;
  }
  const limit = state.info?.limits.max_upload_bytes;
  if (limit && file.size > limit) {
    refuseFile(`${file.name} is ${fmtBytes(file.size)}, over this server's limit of ${fmtBytes(limit)}`, field, index);
    return false;
  }
  if (!(await decodes(file))) {
    refuseFile(`${file.name} cannot be read as a picture: it is damaged or not really an image (this server takes ${formats})`, field, index);
    return false;
  }
  return true;
}

async function setContent(file) {
  if (!file) return;
  clearError("content");
  if (!(await acceptFile(file, "content"))) return;
  state.content = file;
  state.contentSize = null;
  const img = $("content-preview");
  img.onload = () => { state.contentSize = [img.naturalWidth, img.naturalHeight]; updateEstimate(); };
  img.src = URL.createObjectURL(file);
  img.hidden = false;
  $("content-prompt").hidden = true;
  $("tryit").hidden = true;
  renderStyles();
}

async function addStyles(files) {
  clearError("style");
  const max = state.info?.limits.max_styles ?? 5;
  for (const file of files) {
    if (!(await acceptFile(file, "style"))) continue;
    if (state.styles.length >= max) {
      refuseFile(`at most ${max} style images per job on this server`, "style");
      break;
    }
    state.styles.push({ file, mask: null });
  }
  renderStyles();
}

function renderStyles() {
  const box = $("style-thumbs");
  box.replaceChildren(...state.styles.map((style, i) => {
    const remove = el("button", { type: "button", className: "x", textContent: "×", title: `remove ${style.file.name}` });
    remove.setAttribute("aria-label", `remove ${style.file.name}`);
    remove.onclick = () => { state.styles.splice(i, 1); clearError("style"); renderStyles(); };
    const paint = el("button", { type: "button", className: "chip", textContent: style.mask ? "Mask ✓" : "Paint mask",
      title: "paint where this style goes: a mask confines it to part of the photo", disabled: !state.content });
    paint.dataset.testid = `paint-mask-${i}`;
    paint.onclick = () => openPainter(i);
    const upload = el("button", { type: "button", className: "chip", textContent: "⤒", title: "upload a mask for this style: a grayscale image, white where the style goes" });
    upload.setAttribute("aria-label", `upload a mask for style ${i + 1}`);
    upload.dataset.testid = `upload-mask-${i}`;
    upload.onclick = () => { state.maskTarget = i; $("mask-input").click(); };
    const chips = el("div", { className: "chips" }, paint, upload);
    if (style.mask) {
      const drop = el("button", { type: "button", className: "chip", textContent: "×", title: "remove the mask" });
      drop.setAttribute("aria-label", `remove the mask of style ${i + 1}`);
      drop.onclick = () => { style.mask = null; renderStyles(); };
      chips.append(drop);
    }
    const thumb = el("div", { className: "thumb", title: style.file.name },
      el("img", { src: URL.createObjectURL(style.file), alt: style.file.name }), remove);
    if (style.mask) thumb.append(el("img", { className: "mask-badge", src: URL.createObjectURL(style.mask), alt: `mask of style ${i + 1}` }));
    return el("div", { className: "style-item" }, thumb, chips);
  }));
  const n = state.styles.length;
  const masked = state.styles.filter((s) => s.mask).length;
  $("style-count").textContent = n ? `${n} image${n > 1 ? "s" : ""}${masked ? `, ${masked} with a mask` : n > 1 ? ", blended equally" : ""}` : "";
  updateStart();
}

async function setMask(index, file) {
  clearError("style_mask");
  if (!file || !state.styles[index] || !(await acceptFile(file, "style_mask", index))) return;
  state.styles[index].mask = file;
  renderStyles();
}

// ---------------------------------------------------------------- built-in pictures

// the server's paintings (GET /api/styles): a click adds one as a style image, sent back
// as an ordinary upload
async function buildGallery() {
  let paintings;
  try {
    paintings = await apiJson("/api/styles");
  } catch (_) {
    return;  // an older server: no gallery
  }
  const box = $("gallery");
  box.replaceChildren(el("span", { className: "gallery-label", textContent: "Or click a built-in painting:" }),
    ...await Promise.all(paintings.map(async (p) => {
      const button = el("button", { type: "button", className: "painting",
        title: `${p.title}, ${p.artist}, ${p.year}: ${p.look}` },
        el("img", { src: await imageUrl(p.image), alt: "" }));
      button.setAttribute("aria-label", `use ${p.title} by ${p.artist}`);
      button.dataset.name = p.name;
      button.onclick = () => addPainting(p.name);
      return button;
    })));
}

async function fetchPicture(path, name) {
  const blob = await (await api(path)).blob();
  return new File([blob], name, { type: blob.type || "image/jpeg" });
}

async function addPainting(name) {
  await addStyles([await fetchPicture(`/api/styles/${name}/image`, `${name}.jpg`)]);
}

// "try it": the sample photo and The Starry Night at 256 px, nothing to upload
async function tryIt() {
  await setContent(await fetchPicture("/api/samples/photo", "sample-cat.jpg"));
  if (!state.styles.length) await addPainting("starry-night");
  const size = state.setters.get("size");
  if (size) size("256");
  updateEstimate();
}

// ---------------------------------------------------------------- how long it will take

let estimateTimer = null;

// asks the server how long the form's job would take there, a moment after the last change
function updateEstimate() {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(fetchEstimate, 250);
}

const onThisComputer = () => (["127.0.0.1", "localhost", "[::1]"].includes(location.hostname)
  ? "on this computer" : "on this server");

async function fetchEstimate() {
  const box = $("estimate");
  if (!state.info || !state.content || !state.contentSize) { box.textContent = ""; return; }
  const query = new URLSearchParams({ width: state.contentSize[0], height: state.contentSize[1] });
  for (const [name, get] of state.controls) {
    const value = get();
    if (value !== "") query.append(name, value);
  }
  try {
    const answer = await apiJson(`/api/estimate?${query}`);
    if (answer.measuring) {
      box.textContent = `measuring how fast ${onThisComputer().slice(3)} is…`;
      estimateTimer = setTimeout(fetchEstimate, 3000);
    } else {
      box.textContent = `${answer.text} ${onThisComputer()}`;
      box.title = `${answer.iterations} iterations, ${answer.output_size.join("×")} px; from this machine's measured speed`;
    }
  } catch (_) {
    box.textContent = "";  // a value the server refuses: Stylize will say which
  }
}

function wireDrop(zone, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onFiles([...e.dataTransfer.files]);
  });
}

function updateStart() {
  const mixing = state.extras.has("fine_style") && state.extras.has("coarse_style");
  $("start").disabled = !(state.info && state.content && (state.styles.length || mixing));
  if ($("sheet-start")) $("sheet-start").disabled = !(state.info && state.content && state.styles.length);
  if ($("video-start")) $("video-start").disabled = !(state.info && state.styles.length);
}

// ---------------------------------------------------------------- painting a mask

const painter = { index: 0, mask: null, ctx: null, drawing: false, last: null };

function openPainter(index) {
  if (!state.content || !state.contentSize) return;
  painter.index = index;
  const [w, h] = state.contentSize;
  const scale = Math.min(1, 768 / Math.max(w, h));
  const canvas = $("paint-canvas");
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  canvas.style.backgroundImage = `url(${$("content-preview").src})`;
  painter.ctx = canvas.getContext("2d");
  painter.ctx.clearRect(0, 0, canvas.width, canvas.height);
  // the mask itself: black, white where painted (what the server reads)
  painter.mask = el("canvas", { width: canvas.width, height: canvas.height });
  const m = painter.mask.getContext("2d");
  m.fillStyle = "black";
  m.fillRect(0, 0, canvas.width, canvas.height);
  $("painter-title").textContent = `Paint where style ${index + 1} goes`;
  $("painter").showModal();
}

function paintAt(event) {
  const canvas = $("paint-canvas");
  const r = canvas.getBoundingClientRect();
  const x = (event.clientX - r.left) * canvas.width / r.width;
  const y = (event.clientY - r.top) * canvas.height / r.height;
  const size = Number($("brush-size").value) * canvas.width / r.width;
  const erase = $("brush-erase").checked;
  const from = painter.last || { x, y };
  for (const [ctx, colour] of [[painter.ctx, "rgba(232, 97, 140, .55)"], [painter.mask.getContext("2d"), erase ? "black" : "white"]]) {
    ctx.globalCompositeOperation = erase && ctx === painter.ctx ? "destination-out" : "source-over";
    ctx.strokeStyle = erase && ctx === painter.ctx ? "black" : colour;
    ctx.lineWidth = size;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(x, y);
    ctx.stroke();
  }
  painter.last = { x, y };
}

function wirePainter() {
  const canvas = $("paint-canvas");
  canvas.addEventListener("pointerdown", (e) => { painter.drawing = true; painter.last = null; canvas.setPointerCapture(e.pointerId); paintAt(e); });
  canvas.addEventListener("pointermove", (e) => { if (painter.drawing) paintAt(e); });
  for (const end of ["pointerup", "pointercancel"]) canvas.addEventListener(end, () => { painter.drawing = false; painter.last = null; });
  $("paint-clear").onclick = () => openPainter(painter.index);
  $("paint-cancel").onclick = () => $("painter").close();
  $("paint-done").onclick = () => {
    painter.mask.toBlob((blob) => {
      setMask(painter.index, new File([blob], `painted-mask-${painter.index + 1}.png`, { type: "image/png" }));
      $("painter").close();
    }, "image/png");
  };
}

// ---------------------------------------------------------------- submitting

function buildForm() {
  const form = new FormData();
  if (state.content) form.append("content", state.content, state.content.name);  // (a video has none)
  for (const s of state.styles) form.append("style", s.file, s.file.name);
  if (state.styles.some((s) => s.mask)) {  // one per style, in order; 'none' for the others
    for (const s of state.styles) {
      if (s.mask) form.append("style_mask", s.mask, s.mask.name);
      else form.append("style_mask", "none");
    }
  }
  for (const [name, file] of state.extras) form.append(name, file, file.name);
  for (const [name, get] of state.controls) {
    const value = get();
    if (value !== "") form.append(name, value);
  }
  return form;
}

// every kind of job is submitted alike: the button waits, the answer is shown (or the
// refusal next to its field), the button comes back (sheet.js and video.js use it too)
async function submitJob(buttonId, url, buildBody) {
  const button = $(buttonId);
  const label = button.textContent;
  button.disabled = true;
  button.textContent = "Uploading…";
  clearAllErrors();
  try {
    const job = await apiJson(url, { method: "POST", body: buildBody() });
    await showJob(job);
    followInView();
    refreshJobs();
  } catch (err) {
    showRefusal(err.message, err.field, err.index);
  } finally {
    button.textContent = label;
    updateStart();
  }
}

function start() {
  return submitJob("start", "/api/jobs", buildForm);
}

// on one column (a phone), the job is below the form: bring it into view
function followInView() {
  const stage = $("stage");
  if (stage.getBoundingClientRect().top > innerHeight * 0.5 || stage.getBoundingClientRect().bottom < 0) {
    stage.scrollIntoView({ behavior: "smooth", block: "start" });
  }
}

// ---------------------------------------------------------------- the stage

const ACTIVE = new Set(["queued", "running"]);

async function showJob(job) {
  if (state.stream) state.stream.abort();
  state.stream = null;
  // another job, or this one run again (retry): what the stage showed is not its image
  const restarted = state.job && ACTIVE.has(job.state) && !ACTIVE.has(state.job.state);
  const switched = !state.job || state.job.id !== job.id || restarted;
  state.job = job;
  history.replaceState(null, "", `#job=${job.id}`);
  if (switched) {
    state.points = [];
    drawPlot();
    setCompare(false);
    $("live-image").hidden = true;
    $("live-image").removeAttribute("src");
    hideVideo();
  }
  await renderJob(job);
  if (ACTIVE.has(job.state)) followJob(job.id);
  markActiveCard();
}

async function renderJob(job) {
  if (!state.job || state.job.id !== job.id) return;
  state.job = job;
  const badge = $("job-state");
  badge.hidden = false;
  badge.className = `badge ${job.state}`;
  badge.textContent = job.state;
  $("stage-title").textContent = jobTitle(job);
  setFrameShape(job.output_size || [job.inputs.content.width, job.inputs.content.height]);

  const progress = $("progress");
  progress.hidden = false;
  progress.classList.toggle("queued", job.state === "queued");
  if (job.state === "queued") {
    setProgress(0, job.queue_position ? `Waiting in the queue — position ${job.queue_position}` : "Waiting in the queue", "", "");
  } else if (job.state === "running" && job.progress && job.progress.iteration) {
    updateProgress(job.progress);
  } else if (job.state === "running") {
    setProgress(0, "Starting — loading the network…", "", "");
  } else if (job.state === "succeeded") {
    const seconds = job.started && job.finished ? (new Date(job.finished) - new Date(job.started)) / 1000 : null;
    setProgress(100, `Done — ${job.iterations} iterations`, seconds != null ? `in ${fmtTime(seconds)}` : "",
      job.losses ? lossSummary(job.losses) : "");
  } else {
    progress.hidden = true;
  }

  const error = $("job-error");
  error.hidden = !job.error || job.state === "succeeded";
  error.textContent = job.error || "";

  $("cancel").hidden = !ACTIVE.has(job.state);
  $("retry").hidden = !["failed", "cancelled", "interrupted"].includes(job.state);
  $("reuse").hidden = false;
  for (const id of ["download", "record", "bundle"]) $(id).hidden = job.state !== "succeeded";
  if (job.state === "succeeded" && isVideo(job)) {
    const [resultUrl, recordUrl, bundleUrl] = await Promise.all([
      videoUrl(job.links.result), imageUrl(job.links.record), imageUrl(job.links.bundle)]);
    Object.assign($("download"), { href: resultUrl, download: `nstyle-${job.id}.mp4`, textContent: "Download MP4" });
    Object.assign($("record"), { href: recordUrl, download: `nstyle-${job.id}.json` });
    Object.assign($("bundle"), { href: bundleUrl, download: `nstyle-${job.id}.zip` });
    setVideo(resultUrl);
  } else if (job.state === "succeeded") {
    $("download").textContent = "Download PNG";
    const [resultUrl, recordUrl, bundleUrl, beforeUrl] = await Promise.all([
      imageUrl(job.links.result), imageUrl(job.links.record), imageUrl(job.links.bundle),
      imageUrl(job.inputs.content.original)]);
    Object.assign($("download"), { href: resultUrl, download: `nstyle-${job.id}.png` });
    Object.assign($("record"), { href: recordUrl, download: `nstyle-${job.id}.json` });
    Object.assign($("bundle"), { href: bundleUrl, download: `nstyle-${job.id}.zip` });
    setImage(resultUrl, null);
    $("before-image").src = beforeUrl;
    setCompare(!isSheet(job));  // a sheet has the photo in it: nothing to slide over
    loadHistory(job);
  } else if (ACTIVE.has(job.state)) {
    if ($("live-image").hidden) await showPlaceholder(job, job.state === "queued"
      ? "Waiting for its turn. The image appears here as soon as it starts."
      : "Starting: the first image appears after one iteration.");
  } else if (job.links.preview) {
    // how far it got: marked as such, never mistaken for a result
    setImage(await imageUrl(job.links.preview), `${job.state} at iteration ${job.iterations ?? 0} — not a finished result`);
  } else {
    await showPlaceholder(job, `No image: the job ${job.state} before its first iteration.`);
  }
}

// a contact sheet (POST /api/sheets) is a job whose options carry its columns
const isSheet = (job) => Boolean(job.options && job.options.sheet_style_weights);
// a video (POST /api/videos) is a job whose options carry its video options
const isVideo = (job) => Boolean(job.options && job.options.video_options);

// a video plays from a URL: behind a token, from the fetched file (a blob URL)
async function videoUrl(path) {
  if (!state.token) return path;
  return imageUrl(path);
}

function setVideo(src) {
  const video = $("result-video");
  video.src = src;
  video.hidden = false;
  $("live-image").hidden = true;
  $("frame").hidden = false;
  $("placeholder").hidden = true;
  $("image-tag").hidden = true;
  setCompare(false);
  fitFrame();
}

function hideVideo() {
  const video = $("result-video");
  if (video.hidden) return;
  video.pause();
  video.removeAttribute("src");
  video.hidden = true;
}

function jobTitle(job) {
  const c = job.inputs.content.name, s = job.inputs.styles.map((x) => x.name).join(" + ");
  if (isVideo(job)) return `Video: ${job.inputs.clip ? job.inputs.clip.name : c} in the style of ${s}`;
  if (isSheet(job)) return `Contact sheet: ${c} with ${s} at style weights ${job.options.sheet_style_weights}`;
  return s ? `${c} in the style of ${s}` : `${c}, mixed styles`;
}

// The frame takes the output's shape before any image arrives, so nothing jumps.
function setFrameShape([w, h]) {
  const frame = $("frame");
  frame.dataset.w = w;
  frame.dataset.h = h;
  fitFrame();
}

function fitFrame() {
  const frame = $("frame");
  const w = Number(frame.dataset.w), h = Number(frame.dataset.h);
  const canvas = $("canvas");
  const pad = parseFloat(getComputedStyle(canvas).paddingLeft) * 2;
  const box = canvas.clientWidth - pad;
  if (!w || !h || box <= 0) return;
  const maxH = Math.min(innerHeight * 0.5, 600);
  const width = Math.min(box, maxH * w / h);
  frame.style.width = `${Math.round(width)}px`;
  frame.style.height = `${Math.round(width * h / w)}px`;
  // small results (a quick 128 px run) are scaled up: keep their pixels sharp
  $("live-image").classList.toggle("small", width / w >= 3);
}
window.addEventListener("resize", fitFrame);

function setImage(src, tag) {
  hideVideo();
  const img = $("live-image");
  img.src = src;
  img.hidden = false;
  $("frame").hidden = false;
  $("placeholder").hidden = true;
  $("image-tag").hidden = !tag;
  $("image-tag").textContent = tag || "";
  fitFrame();
}

async function showPlaceholder(job, text) {
  $("frame").hidden = true;
  $("placeholder").hidden = false;
  $("placeholder-text").textContent = text;
  $("swatches").hidden = true;
  const strip = $("inputs-strip");
  const thumbs = [job.inputs.content, ...job.inputs.styles];
  strip.replaceChildren(...await Promise.all(thumbs.map(async (info) =>
    el("img", { src: await imageUrl(info.thumbnail), alt: info.name, title: info.name }))));
  strip.hidden = false;
}

function setCompare(on) {
  $("compare").hidden = !on;
  $("before-image").hidden = !on;
  $("divider").hidden = !on;
  $("compare-range").value = 100;
  applyCompare();
}

// the slider's value is where "after" starts: 100 = all result, 0 = all photo
function applyCompare() {
  const v = Number($("compare-range").value);
  const on = !$("compare").hidden;
  $("live-image").style.clipPath = on ? `inset(0 0 0 ${100 - v}%)` : "";
  $("divider").style.left = `${100 - v}%`;
  $("divider").hidden = !on || v === 100 || v === 0;
}

function openViewer() {
  const img = $("live-image");
  if (img.hidden || !img.src) return;
  const view = $("viewer-image");
  view.src = img.src;
  // full size; a small result is blown up to the screen (sharp pixels) so it can be seen
  const w = img.naturalWidth, h = img.naturalHeight;
  const scale = Math.max(1, Math.min(innerWidth * 0.94 / w, innerHeight * 0.9 / h));
  view.style.width = `${Math.round(w * scale)}px`;
  view.classList.toggle("pixels", scale >= 2);
  $("viewer").showModal();
}

function setProgress(percent, text, eta, losses) {
  $("bar-fill").style.width = `${Math.min(100, percent)}%`;
  $("bar").setAttribute("aria-valuenow", String(Math.round(Math.min(100, percent))));
  $("progress-text").textContent = text;
  $("eta-text").textContent = eta;
  $("loss-text").textContent = losses;
}

function sumTerms(losses) {
  let content = 0, style = 0;
  for (const [k, v] of Object.entries(losses)) {
    if (v == null) continue;
    if (k.startsWith("content.")) content += v;
    else if (k.startsWith("style.")) style += v;
  }
  return { content, style };
}

function lossSummary(losses) {
  const { content, style } = sumTerms(losses);
  const parts = [`loss ${fmtSci(losses.total)}`, `content ${fmtSci(content)}`, `style ${fmtSci(style)}`];
  if ("tv" in losses) parts.push(`smoothness ${fmtSci(losses.tv)}`);
  return parts.join(" · ");
}

// totals are the run's plan (every size of a coarse-to-fine run), as the server reports it
function updateProgress(p) {
  const eta = p.eta != null ? `about ${fmtTime(p.eta)} left` : "";
  let text = `Iteration ${p.iteration} / ${p.iterations}`;
  if (p.phase === "mix") text += " · mixing the styles";
  else if (p.phase === "sheet") text += ` · picture ${p.scale} of ${p.scales}`;
  else if (p.phase === "video") text += ` · frame ${p.scale} of ${p.scales}`;
  else if (p.scales > 1) text += ` · size ${p.scale} of ${p.scales}`;
  setProgress(p.percent, text, eta, p.losses.total != null ? lossSummary(p.losses) : "");
  if (p.losses.total != null && (!state.points.length || state.points.at(-1).iteration < p.iteration)) {
    state.points.push({ iteration: p.iteration, scale: p.scale || 1, losses: p.losses });
    drawPlot();
  }
}

// ---------------------------------------------------------------- the loss plot

async function loadHistory(job) {
  try {
    const record = await apiJson(job.links.record);
    const h = record.history;
    if (!h || !state.job || state.job.id !== job.id) return;
    const terms = Object.keys(h).filter((k) => !["iteration", "scale", "phase", "elapsed"].includes(k));
    state.points = h.iteration.map((it, i) => ({
      iteration: it, scale: h.scale[i], phase: h.phase[i],
      losses: Object.fromEntries(terms.map((t) => [t, h[t][i]])),
    })).filter((p) => p.phase !== "mix");
    drawPlot();
  } catch (_) { /* an old record without history: no plot */ }
}

const SERIES = [
  { name: "total", colour: "#24212b", value: (l) => l.total },
  { name: "content", colour: "#1f9d6b", value: (l) => sumTerms(l).content },
  { name: "style", colour: "#e8618c", value: (l) => sumTerms(l).style },
  { name: "smoothness", colour: "#c98a12", value: (l) => l.tv },
];

function drawPlot() {
  const box = $("plot-box");
  const points = state.points;
  box.hidden = points.length < 2;
  if (box.hidden) return;
  const W = Math.max(300, Math.round($("plot").clientWidth || 600)), H = 150, L = 42, R = 8, T = 8, B = 22;
  const xs = points.map((p) => p.iteration);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const values = [];
  for (const s of SERIES) for (const p of points) { const v = s.value(p.losses); if (v > 0) values.push(Math.log10(v)); }
  const y0 = Math.floor(Math.min(...values)), y1 = Math.ceil(Math.max(...values)) || y0 + 1;
  const X = (x) => L + (W - L - R) * (x - x0) / Math.max(1, x1 - x0);
  const Y = (v) => T + (H - T - B) * (1 - (Math.log10(v) - y0) / Math.max(1, y1 - y0));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "loss terms over iterations, logarithmic scale");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text != null) node.textContent = text;
    svg.append(node);
  };
  const step = Math.max(1, Math.ceil((y1 - y0) / 4));
  for (let e = y0; e <= y1; e += step) {
    add("line", { x1: L, x2: W - R, y1: Y(10 ** e), y2: Y(10 ** e), class: "grid" });
    add("text", { x: L - 6, y: Y(10 ** e) + 4, class: "axis", "text-anchor": "end" }, `1e${e}`);
  }
  for (let i = 1; i < points.length; i++) {  // a new size of a coarse-to-fine run starts here
    if (points[i].scale !== points[i - 1].scale) add("line", { x1: X(xs[i]), x2: X(xs[i]), y1: T, y2: H - B, class: "scale" });
  }
  add("text", { x: L, y: H - 6, class: "axis" }, `iteration ${x0}`);
  add("text", { x: W - R, y: H - 6, class: "axis", "text-anchor": "end" }, String(x1));
  const legend = el("div", { className: "legend" });
  for (const s of SERIES) {
    const pts = points.map((p) => [p.iteration, s.value(p.losses)]).filter(([, v]) => v > 0);
    if (pts.length < 2) continue;
    add("polyline", { points: pts.map(([x, v]) => `${X(x).toFixed(1)},${Y(v).toFixed(1)}`).join(" "),
      fill: "none", stroke: s.colour, "stroke-width": s.name === "total" ? 2 : 1.5 });
    legend.append(el("span", {}, el("i", { style: `background:${s.colour}` }), s.name));
  }
  $("plot").replaceChildren(svg, legend);
}

// ---------------------------------------------------------------- following a job

// Reads the server-sent events of one job with fetch (so the token header can be sent),
// and reconnects if the connection drops before the job ends.
async function followJob(jobId) {
  const controller = new AbortController();
  state.stream = controller;
  while (!controller.signal.aborted) {
    try {
      const response = await api(`/api/jobs/${jobId}/events`, { signal: controller.signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          if (handleEvent(jobId, chunk)) return;
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      if (err instanceof ApiError && err.status === 404) return;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function handleEvent(jobId, chunk) {
  let event = "message", data = "";
  for (const line of chunk.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data || !state.job || state.job.id !== jobId) return false;
  const payload = JSON.parse(data);
  if (event === "state") { renderJob(payload); refreshJobs(); }
  else if (event === "progress") updateProgress(payload);
  else if (event === "preview" && ACTIVE.has(state.job.state)) setImage(payload.image, null);
  else if (event === "end") { renderJob(payload); refreshJobs(); return true; }
  else if (event === "deleted") { clearStage(); refreshJobs(); return true; }
  return false;
}

function clearStage() {
  if (state.stream) state.stream.abort();
  state.job = null;
  state.points = [];
  drawPlot();
  history.replaceState(null, "", location.pathname);
  $("job-state").hidden = true;
  $("stage-title").textContent = "Result";
  $("live-image").hidden = true;
  hideVideo();
  $("frame").hidden = true;
  setCompare(false);
  $("placeholder").hidden = false;
  $("swatches").hidden = false;
  $("inputs-strip").hidden = true;
  $("placeholder-text").textContent = "Your image appears here and evolves live while it is painted.";
  $("progress").hidden = true;
  $("job-error").hidden = true;
  for (const id of ["cancel", "retry", "reuse", "download", "record", "bundle"]) $(id).hidden = true;
}

async function reuseJob(job) {
  // the job's own uploads and options back in the form, to tweak and run again
  const fetchFile = async (info) => {
    if (!info) return null;
    const blob = await (await api(info.original)).blob();
    return new File([blob], info.name, { type: blob.type });
  };
  clearAllErrors();
  await setContent(await fetchFile(job.inputs.content));
  const styles = await Promise.all(job.inputs.styles.map(fetchFile));
  const masks = await Promise.all((job.inputs.style_masks || []).map(fetchFile));
  state.styles = styles.map((file, i) => ({ file, mask: masks[i] || null }));
  renderStyles();
  for (const field of state.info.inputs.filter((f) => !f.per_style)) {
    state.setters.get(`file:${field.name}`)(await fetchFile(job.inputs[field.name]));
  }
  for (const opt of state.info.options) {
    const set = state.setters.get(opt.name);
    if (!set) continue;
    const given = job.options[opt.name];
    if (given !== undefined) set(given);
    else if (MAIN_OPTIONS.some((m) => m.name === opt.name) || opt.choices) set(opt.default);
    else set("");
  }
  window.scrollTo({ top: 0, behavior: "smooth" });
}

// ---------------------------------------------------------------- past jobs

let refreshTimer = null;

async function refreshJobs() {
  clearTimeout(refreshTimer);
  let list;
  try {
    list = await apiJson("/api/jobs?limit=60");
  } catch (err) {
    setServer(false, err.message);
    refreshTimer = setTimeout(refreshJobs, 5000);
    return;
  }
  setServer(true, `${list.running} running · ${list.queued} queued`);
  $("history-count").textContent = list.total ? `${list.total} job${list.total > 1 ? "s" : ""}` : "";
  $("jobs-empty").hidden = list.total > 0;
  const cards = await Promise.all(list.jobs.map(jobCard));
  $("jobs").replaceChildren(...cards);
  markActiveCard();
  // poll while something is moving; the stage itself follows its job by events
  refreshTimer = setTimeout(refreshJobs, list.running || list.queued ? 3000 : 15000);
}

async function jobCard(job) {
  const result = job.state === "succeeded";
  const picture = result && !isVideo(job) ? job.links.result : job.links.preview || job.inputs.content.thumbnail;
  const strip = el("div", { className: "styles-strip" });
  for (const s of job.inputs.styles.slice(0, 4)) {
    strip.append(el("img", { src: await imageUrl(s.thumbnail), alt: "", title: s.name }));
  }
  const del = el("button", { type: "button", className: "del", textContent: "×", title: "delete this job" });
  del.setAttribute("aria-label", "delete job");
  del.onclick = async (e) => {
    e.stopPropagation();
    if (!confirm("Delete this job and its images?")) return;
    await api(job.links.self, { method: "DELETE" });
    if (state.job && state.job.id === job.id) clearStage();
    refreshJobs();
  };
  const size = job.output_size ? `${job.output_size[0]}×${job.output_size[1]}`
    : `${(job.config.scale.scales || [job.config.image.size]).at(-1)} px`;
  const iterations = job.iterations_total ?? job.config.optim.iterations;
  const card = el("div", { className: `job${result ? "" : " not-result"}`, tabIndex: 0, role: "button" },
    el("div", { className: "pic" }, el("img", { src: await imageUrl(picture), alt: "", loading: "lazy" }), strip),
    el("div", { className: "info" },
      el("div", { className: "row" },
        el("span", { className: `badge ${job.state}`, textContent: job.state }),
        el("span", { className: "when", textContent: fmtAgo(job.created) })),
      el("div", { className: "when", textContent: `${size} · ${iterations} it · ${job.inputs.content.name}` })),
    del);
  card.dataset.id = job.id;
  card.setAttribute("aria-label", `${job.state} job ${jobTitle(job)}`);
  const open = () => { showJob(job); followInView(); };
  card.onclick = open;
  card.onkeydown = (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } };
  return card;
}

function markActiveCard() {
  for (const card of document.querySelectorAll(".job")) {
    card.classList.toggle("active", Boolean(state.job) && card.dataset.id === state.job.id);
  }
}

function setServer(ok, text) {
  const pill = $("server-status");
  pill.className = `server ${ok ? "ok" : "down"}`;
  pill.textContent = ok ? text : `server unreachable: ${text}`;
}

// ---------------------------------------------------------------- start-up

async function act(action) {
  try {
    await action();
  } catch (err) {
    $("job-error").textContent = err.message;
    $("job-error").hidden = false;
  }
  refreshJobs();
}

async function main() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {  // #token=... : a link that logs in; the fragment never reaches the server
    state.token = hash.get("token");
    sessionStorage.setItem("nstyle-token", state.token);
    history.replaceState(null, "", location.pathname);
  }
  $("content-input").addEventListener("change", (e) => { setContent(e.target.files[0]); e.target.value = ""; });
  $("style-input").addEventListener("change", (e) => { addStyles([...e.target.files]); e.target.value = ""; });
  $("mask-input").addEventListener("change", (e) => { setMask(state.maskTarget, e.target.files[0]); e.target.value = ""; });
  wireDrop($("content-drop"), (files) => setContent(files[0]));
  wireDrop($("style-drop"), addStyles);
  wirePainter();
  $("start").onclick = start;
  $("try-it").onclick = () => tryIt().catch((err) => showFormError(err.message));
  $("cancel").onclick = () => act(async () => renderJob(await apiJson(state.job.links.cancel, { method: "POST" })));
  $("retry").onclick = () => act(async () => showJob(await apiJson(state.job.links.retry, { method: "POST" })));
  $("reuse").onclick = () => reuseJob(state.job);
  $("compare-range").addEventListener("input", applyCompare);
  $("frame").addEventListener("click", openViewer);
  $("frame").title = "click to see it at full size";

  try {
    state.info = await apiJson("/api/info");
  } catch (err) {
    setServer(false, err.message);
    return;
  }
  buildControls(state.info);
  buildGallery();
  const formats = state.info.limits.formats.join(", ");
  $("content-drop").title = `${formats}; up to ${fmtBytes(state.info.limits.max_upload_bytes)}`;
  updateStart();
  clearStage();
  await refreshJobs();
  const wanted = hash.get("job");
  if (wanted) {
    try { await showJob(await apiJson(`/api/jobs/${wanted}`)); } catch (_) { clearStage(); }
  }
}

main();
