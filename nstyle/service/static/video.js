// The video button: a clip picked here, with the form's style images and options, sent to
// POST /api/videos. The clip's first frame stands for the photo (no photo is needed);
// masks, a keep mask, a starting image and the scale-mixing pair belong to still images
// and are left out. The job that comes back is shown and followed like any other
// (app.js): its progress counts frames, and its result plays on the stage.
"use strict";

function buildVideoForm(file) {
  const form = buildForm();
  form.delete("content");
  form.delete("style_mask");
  for (const field of ["keep_mask", "init_image", "fine_style", "coarse_style"]) form.delete(field);
  for (const name of ["fine_layers", "mix_iterations"]) form.delete(name);  // scale mixing's
  form.append("clip", file, file.name);
  const perFrame = $("video-frame-iterations").value.trim();
  if (perFrame) form.append("frame_iterations", perFrame);
  return form;
}

function startVideo(file) {
  return submitJob("video-start", "/api/videos", () => buildVideoForm(file));
}

// the field's placeholder is the server's default
const frameOption = () => (state.info?.video_options || []).find((o) => o.name === "frame_iterations");
$("video-start").addEventListener("click", () => {
  if (frameOption()) $("video-frame-iterations").placeholder = String(frameOption().default);
  $("video-input").click();
});
$("video-frame-iterations").addEventListener("input", () => clearError("frame_iterations"));
$("video-input").addEventListener("change", (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (file) startVideo(file);
});
