// The contact sheet button: the form's photo, styles and options, sent to POST /api/sheets
// with the weights typed beside the button. Size and iterations are the sheet's own (small
// and quick: 256 px, 60 iterations), whatever the form says for the big run; the job that
// comes back is shown and followed like any other (app.js).
"use strict";

// the form's options that a sheet sets itself, or cannot take
const SHEET_OWN = ["size", "iterations", "scales", "scale_iterations", "style_weight", "style_blend_weights"];

function buildSheetForm() {
  const form = buildForm();
  // the form's size is the big run's: the sheet shows that run's balance of content and style
  if (form.get("size")) form.append("for_size", form.get("size"));
  for (const name of SHEET_OWN) form.delete(name);
  form.delete("style_mask");  // a row is a whole style image: no masks
  for (const field of ["keep_mask", "init_image", "fine_style", "coarse_style"]) form.delete(field);
  form.append("style_weights", $("sheet-weights").value.trim());
  return form;
}

function startSheet() {
  return submitJob("sheet-start", "/api/sheets", buildSheetForm);
}

$("sheet-start").addEventListener("click", startSheet);
$("sheet-weights").addEventListener("input", () => clearError("style_weights"));
