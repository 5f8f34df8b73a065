// u2seg web page: pick or drop an image, see original / mask / cutout, tune, download.
// Plain JS, no dependencies; talks only to this server's /api.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    drop: $("drop"), input: $("file-input"), fileName: $("file-name"),
    model: $("model"), modelRow: $("model-row"), modelInfo: $("model-info"),
    thresholdOn: $("threshold-enable"), threshold: $("threshold"), thresholdValue: $("threshold-value"),
    postProcess: $("post-process"), edgeRefine: $("edge-refine"),
    matting: $("matting"), mattingOptions: $("matting-options"),
    fg: $("fg-threshold"), bg: $("bg-threshold"), erode: $("erode-size"),
    bgColor: $("bgcolor"), bgColorRadio: $("bg-color-radio"), crop: $("crop"), format: $("format"),
    download: $("download"), downloadMask: $("download-mask"), status: $("status"),
    original: $("original"), mask: $("mask"), cutout: $("cutout"),
    keyForm: $("key-form"), key: $("api-key"), keyError: $("key-error"),
  };

  // The API key, when the server asks for one: kept for this tab only (sessionStorage), sent as
  // X-API-Key, never put in a URL.
  const KEY_ITEM = "u2seg-api-key";
  function apiHeaders() {
    const key = sessionStorage.getItem(KEY_ITEM);
    return key ? { "X-API-Key": key } : {};
  }
  function askForKey(message) {
    els.keyForm.hidden = false;
    els.keyError.textContent = message || "";
    els.key.focus();
  }

  const state = {
    file: null, originalUrl: null, maskUrl: null, cutoutUrl: null,
    controller: null, timer: null, runs: 0, limits: null,
  };

  // ------------------------------------------------------------------ helpers
  function setStatus(text, isError = false) {
    els.status.textContent = text;
    els.status.classList.toggle("error", isError);
  }

  function setState(name) { document.body.dataset.state = name; }

  function showImage(img, url) {
    img.src = url;
    img.classList.add("shown");
  }

  function replaceUrl(key, blob) {
    if (state[key]) URL.revokeObjectURL(state[key]);
    state[key] = blob ? URL.createObjectURL(blob) : null;
    return state[key];
  }

  function enableLink(link, url, filename) {
    link.href = url;
    link.download = filename;
    link.classList.remove("disabled");
    link.setAttribute("aria-disabled", "false");
  }

  function stem(name) {
    const base = (name || "image").replace(/^.*[\\/]/, "");
    const dot = base.lastIndexOf(".");
    return (dot > 0 ? base.slice(0, dot) : base) || "image";
  }

  function humanBytes(n) {
    if (n < 1024) return `${n} bytes`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  function backgroundMode() {
    return document.querySelector('input[name="background"]:checked').value;
  }

  // The options shared by the mask and the cutout request.
  function commonOptions() {
    const options = {};
    if (els.model.value) options.model = els.model.value;
    if (els.thresholdOn.checked) options.threshold = (Number(els.threshold.value) / 100).toFixed(2);
    if (els.postProcess.checked) options.post_process_mask = "true";
    if (els.edgeRefine.checked) options.edge_refine = "true";
    if (els.matting.checked) {
      options.alpha_matting = "true";
      options.alpha_matting_foreground_threshold = els.fg.value;
      options.alpha_matting_background_threshold = els.bg.value;
      options.alpha_matting_erode_size = els.erode.value;
    }
    return options;
  }

  async function request(options, signal) {
    const form = new FormData();
    form.append("file", state.file, state.file.name || "image");
    for (const [key, value] of Object.entries(options)) form.append(key, value);
    const response = await fetch("/api/remove", { method: "POST", body: form, signal, headers: apiHeaders() });
    if (response.status === 401) askForKey("The key was refused.");
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try {
        const body = await response.json();
        if (body && body.detail) detail = String(body.detail);
      } catch (_) { /* not JSON */ }
      throw new Error(detail);
    }
    return { blob: await response.blob(), model: response.headers.get("X-Model"),
             confidence: response.headers.get("X-U2seg-Confidence") };
  }

  // ------------------------------------------------------------------ the work
  async function run() {
    if (!state.file) return;
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    const started = performance.now();
    const fmt = els.format.value;
    const common = commonOptions();
    const cutoutOptions = { ...common, format: fmt };
    if (backgroundMode() === "color") cutoutOptions.bgcolor = els.bgColor.value;
    if (els.crop.checked) cutoutOptions.crop = "true";

    setState("working");
    setStatus(els.matting.checked ? "Removing the background (alpha matting)…" : "Removing the background…");
    try {
      const [mask, cutout] = await Promise.all([
        request({ ...common, only_mask: "true", format: "png" }, controller.signal),
        request(cutoutOptions, controller.signal),
      ]);
      if (controller !== state.controller) return; // superseded
      const name = stem(state.file.name);
      showImage(els.mask, replaceUrl("maskUrl", mask.blob));
      showImage(els.cutout, replaceUrl("cutoutUrl", cutout.blob));
      enableLink(els.download, state.cutoutUrl, `${name}-cutout.${fmt}`);
      enableLink(els.downloadMask, state.maskUrl, `${name}-mask.png`);
      await Promise.all([els.mask.decode().catch(() => {}), els.cutout.decode().catch(() => {})]);
      const seconds = ((performance.now() - started) / 1000).toFixed(2);
      const size = els.original.naturalWidth ? ` · ${els.original.naturalWidth}×${els.original.naturalHeight}` : "";
      const trust = cutout.confidence ? ` · confidence ${cutout.confidence}` : "";
      setStatus(`Done in ${seconds} s · ${cutout.model || "model"}${size} · ${humanBytes(cutout.blob.size)}${trust}`);
      state.runs += 1;
      document.body.dataset.runs = String(state.runs);
      setState("done");
    } catch (err) {
      if (err.name === "AbortError" || controller !== state.controller) return;
      setStatus(err.message || String(err), true);
      setState("error");
    }
  }

  function schedule(delay = 250) {
    clearTimeout(state.timer);
    if (state.file) state.timer = setTimeout(run, delay);
  }

  function useFile(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      setStatus(`${file.name} is not an image (${file.type}).`, true);
      setState("error");
      return;
    }
    if (state.limits && file.size > state.limits.max_upload_bytes) {
      setStatus(`${file.name} is ${humanBytes(file.size)}; the limit is ${humanBytes(state.limits.max_upload_bytes)}.`, true);
      setState("error");
      return;
    }
    state.file = file;
    els.fileName.textContent = file.name;
    for (const [img, key] of [[els.mask, "maskUrl"], [els.cutout, "cutoutUrl"]]) {
      img.classList.remove("shown");
      img.removeAttribute("src");
      replaceUrl(key, null);
    }
    els.original.parentElement.querySelector(".placeholder").textContent = "No image yet";
    showImage(els.original, replaceUrl("originalUrl", file));
    for (const link of [els.download, els.downloadMask]) {
      link.classList.add("disabled");
      link.setAttribute("aria-disabled", "true");
    }
    schedule(0);
  }

  // Browsers cannot show every format the server reads (TIFF, for one): say so instead of a broken icon.
  els.original.addEventListener("error", () => {
    if (!els.original.getAttribute("src")) return;
    els.original.classList.remove("shown");
    els.original.parentElement.querySelector(".placeholder").textContent = "No preview for this format";
  });

  // The frames take the picture's proportions (within limits), so it fills them.
  els.original.addEventListener("load", () => {
    const w = els.original.naturalWidth, h = els.original.naturalHeight;
    if (!w || !h) return;
    const ratio = Math.min(2.2, Math.max(0.6, w / h));
    document.querySelector(".results").style.setProperty("--ratio", String(ratio));
  });

  // ------------------------------------------------------------------ wiring
  els.input.addEventListener("change", () => useFile(els.input.files[0]));

  for (const type of ["dragenter", "dragover"]) {
    els.drop.addEventListener(type, (e) => { e.preventDefault(); els.drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    els.drop.addEventListener(type, () => els.drop.classList.remove("over"));
  }
  els.drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) useFile(e.dataTransfer.files[0]);
  });
  // Dropping anywhere on the page works too, instead of the browser opening the file.
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) useFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (item) useFile(item.getAsFile());
  });
  els.drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); els.input.click(); }
  });

  els.thresholdOn.addEventListener("change", () => {
    els.threshold.disabled = !els.thresholdOn.checked;
    schedule(0);
  });
  els.threshold.addEventListener("input", () => {
    els.thresholdValue.textContent = (Number(els.threshold.value) / 100).toFixed(2);
    schedule();
  });
  els.matting.addEventListener("change", () => {
    els.mattingOptions.hidden = !els.matting.checked;
    schedule(0);
  });
  for (const slider of [els.fg, els.bg, els.erode]) {
    const out = slider.parentElement.querySelector("output");
    slider.addEventListener("input", () => { out.textContent = slider.value; schedule(400); });
  }
  for (const radio of document.querySelectorAll('input[name="background"]')) {
    radio.addEventListener("change", () => schedule(0));
  }
  els.bgColor.addEventListener("input", () => { els.bgColorRadio.checked = true; schedule(); });
  for (const el of [els.postProcess, els.edgeRefine, els.crop, els.format, els.model]) {
    el.addEventListener("change", () => schedule(0));
  }

  // ------------------------------------------------------------------ models
  function loadModels() {
    fetch("/api/models", { headers: apiHeaders() })
      .then((r) => {
        if (r.status === 401) {
          const hadKey = Boolean(sessionStorage.getItem(KEY_ITEM));
          askForKey(hadKey ? "The key was refused." : "");
          setStatus("Enter an API key to use this server.", true);
          return Promise.reject(new Error("401"));
        }
        return r.ok ? r.json() : Promise.reject(new Error(`${r.status}`));
      })
      .then((info) => {
        els.keyForm.hidden = true;
        if (document.body.dataset.state === "idle") setStatus("Choose an image to start.");
        state.limits = info.limits || null;
        els.model.textContent = "";
        for (const m of info.models) {
          const option = document.createElement("option");
          option.value = m.name;
          option.textContent = m.input_size ? `${m.name} (${m.input_size[0]}×${m.input_size[1]})` : m.name;
          option.selected = m.name === info.default;
          els.model.append(option);
        }
        els.modelRow.hidden = info.models.length < 2;
        if (!info.models.length) {
          setStatus("No model weights on the server: run 'u2seg weights fetch u2net' there.", true);
        } else {
          const chosen = info.models.find((m) => m.name === info.default) || info.models[0];
          els.modelInfo.textContent = `model: ${chosen.name}`;
        }
      })
      .catch((err) => { if (err.message !== "401") setStatus("Could not reach the server's /api/models.", true); });
  }
  els.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = els.key.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_ITEM, key);
    els.key.value = "";
    loadModels();
    if (state.file) schedule(0);
  });
  loadModels();
})();
