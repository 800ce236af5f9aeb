// dupecheck offline: the phone keeps a copy of the index and checks photos itself.
// window.dupecheck.offline = {save(), status(), check(blob, name, {threshold}), forget(), pdq(blob),
// embedding(blob), thumbnail(row), header()}.
// The copy (offline.py's container) and the model (ONNX) live in Cache Storage; the
// model runs in ONNX Runtime Web (WASM), served by `dupecheck serve` from the package.
// The verdict follows the CLI's rules: exact (SHA-256 of the bytes), near-identical (PDQ
// of the full frame, its turns and mirror images, and Instagram's crops, <= 31 bits),
// similar (cosine >= the threshold in force; 1.0 turns it off); `re-framed` needs the
// computer.
"use strict";
(() => {
  const CACHE = "dupecheck-offline-v1";
  const COPY_FORMAT = 2;  // offline.py's FORMAT_VERSION
  const ORT_BASE = "/vendor/onnxruntime-web/";
  const TOKEN_KEY = "dupecheck-token";
  const RASTER_THUMBS = ["webp", "jpeg", "png"];  // the thumbnail types a copy may name
  const PDQ_MATCH_DISTANCE = 31;
  const PDQ_MAX_SIDE = 512;
  const MIN_CROP_CHANGE = 0.02;
  const VARIANTS = [["4:5", 4 / 5], ["1:1", 1.0], ["1.91:1", 1.91]];
  const TOP_K = 5;
  let loaded = null;   // {header, rows, ...} of the saved copy
  let session = null;  // the ONNX Runtime session

  // Python's round(): halves to even (the CLI's crops use it; Math.round goes up).
  const pyRound = (x) => {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  };

  const bearer = () => ({Authorization: "Bearer " + localStorage.getItem(TOKEN_KEY)});

  async function fetchOk(url) {
    const r = await fetch(url, {headers: bearer()});
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r;
  }

  // -- the copy -------------------------------------------------------------------------

  async function save() {
    const info = await (await fetchOk("/api/offline/info")).json();
    const copy = await fetchOk("/api/offline");
    const model = await fetchOk("/api/offline/model");
    const cache = await caches.open(CACHE);
    await cache.put("/offline/copy", copy);
    await cache.put("/offline/model", model);
    const meta = {generation: info.generation, photos: info.photos,
                  bytes: info.bytes + (info.model_bytes || 0),
                  saved_at: new Date().toISOString()};
    await cache.put("/offline/meta", new Response(JSON.stringify(meta)));
    if (navigator.storage && navigator.storage.persist) navigator.storage.persist();
    loaded = null;
    session = null;
    return meta;
  }

  async function status() {
    const hit = await (await caches.open(CACHE)).match("/offline/meta");
    return hit ? hit.json() : null;
  }

  async function forget() {
    loaded = null;
    session = null;
    await caches.delete(CACHE);
  }

  function halfToFloat(bits) {
    const out = new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) {
      const h = bits[i], s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      out[i] = e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity)
        : s * (1 + f / 1024) * 2 ** (e - 15);
    }
    return out;
  }

  async function load() {
    if (loaded) return loaded;
    const hit = await (await caches.open(CACHE)).match("/offline/copy");
    if (!hit) throw new Error("no copy on this phone: keep one first");
    const buf = await hit.arrayBuffer();
    const magic = "DUPECHECK-OFFLINE\n";
    const head = new TextDecoder().decode(new Uint8Array(buf, 0, magic.length));
    if (head !== magic) throw new Error("the copy on this phone is damaged");
    const length = new DataView(buf).getUint32(magic.length, true);
    const start = magic.length + 4;
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, start, length)));
    const body = start + length;
    const section = (name) => {
      const [off, len] = header.sections[name];
      return buf.slice(body + off, body + off + len);  // a copy: aligned for typed arrays
    };
    const n = header.photos, dim = header.dim;
    if (header.format !== COPY_FORMAT) {
      throw new Error("the copy on this phone was made by another version of dupecheck: keep a new one");
    }
    // scorer(query) -> (row -> the query's dot product with that row), read in place:
    // int8 rows stay int8 in memory (10,000 photos: 20 MB, not 80 as float32).
    const encoding = header.embeddings_encoding;
    let scorer;
    if (encoding === "int8-pca") {
      // row = mean + coefficients . basis + codes * scale (offline.py's PcaRows)
      const k = header.components;
      const mean = new Float32Array(section("mean"));
      const basis = halfToFloat(new Uint16Array(section("basis")));
      const coefficients = halfToFloat(new Uint16Array(section("coefficients")));
      const codes = new Int8Array(section("embeddings"));
      const scales = new Float32Array(section("scales"));
      scorer = (v) => {
        let base = 0;
        for (let d = 0; d < dim; d++) base += v[d] * mean[d];
        const projected = new Float32Array(k);
        for (let c = 0; c < k; c++) {
          let s = 0;
          for (let d = 0, o = c * dim; d < dim; d++) s += v[d] * basis[o + d];
          projected[c] = s;
        }
        return (r) => {
          let p = 0, s = 0;
          for (let c = 0, o = r * k; c < k; c++) p += projected[c] * coefficients[o + c];
          for (let d = 0, o = r * dim; d < dim; d++) s += v[d] * codes[o + d];
          return base + p + scales[r] * s;
        };
      };
    } else {
      const mean = encoding === "float16-centred" ? new Float32Array(section("mean")) : null;
      const vectors = encoding === "float16-centred"
        ? halfToFloat(new Uint16Array(section("embeddings")))
        : new Float32Array(section("embeddings"));
      scorer = (v) => {
        let base = 0;
        if (mean) for (let d = 0; d < dim; d++) base += v[d] * mean[d];
        return (r) => {
          let s = 0;
          for (let d = 0, o = r * dim; d < dim; d++) s += v[d] * vectors[o + d];
          return base + s;
        };
      };
    }
    loaded = {header, n, dim, scorer, pdq: new Uint8Array(section("pdq")),
              sha: new Uint8Array(section("sha256")),
              thumbEnds: new Uint32Array(section("thumb_ends")),
              thumbs: new Uint8Array(section("thumbs"))};
    return loaded;
  }

  // -- PDQ (Meta's reference algorithm: luma, Jarosz filter, 64x64, 16x16 DCT) -----------

  function box1d(src, dst, length, stride, offset, window) {
    const half = Math.floor((window + 2) / 2);
    let li = offset, ri = offset, oi = offset, sum = 0, size = 0;
    for (let i = 0; i < half - 1; i++) { sum += src[ri]; size++; ri += stride; }
    for (let i = 0; i < window - half + 1; i++) {
      sum += src[ri]; size++; dst[oi] = sum / size; ri += stride; oi += stride;
    }
    for (let i = 0; i < length - window; i++) {
      sum += src[ri]; sum -= src[li]; dst[oi] = sum / size; li += stride; ri += stride;
      oi += stride;
    }
    for (let i = 0; i < half - 1; i++) {
      sum -= src[li]; size--; dst[oi] = sum / size; li += stride; oi += stride;
    }
  }

  const DCT = (() => {
    const m = new Float64Array(16 * 64);
    for (let i = 0; i < 16; i++) {
      for (let j = 0; j < 64; j++) {
        m[i * 64 + j] = Math.sqrt(2 / 64) * Math.cos((Math.PI / 2 / 64) * (i + 1) * (2 * j + 1));
      }
    }
    return m;
  })();

  function pdqCoefficients(rgba, width, height) {
    const luma = new Float64Array(width * height);
    for (let i = 0; i < width * height; i++) {
      luma[i] = 0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2];
    }
    const tmp = new Float64Array(width * height);
    const alongRows = Math.floor((width + 2 * 64 - 1) / (2 * 64));
    const alongCols = Math.floor((height + 2 * 64 - 1) / (2 * 64));
    for (let rep = 0; rep < 2; rep++) {
      for (let r = 0; r < height; r++) box1d(luma, tmp, width, 1, r * width, alongRows);
      for (let c = 0; c < width; c++) box1d(tmp, luma, height, width, c, alongCols);
    }
    const small = new Float64Array(64 * 64);
    for (let i = 0; i < 64; i++) {
      const ri = Math.floor(((i + 0.5) * height) / 64);
      for (let j = 0; j < 64; j++) {
        small[i * 64 + j] = luma[ri * width + Math.floor(((j + 0.5) * width) / 64)];
      }
    }
    const half = new Float64Array(16 * 64);  // D * A
    for (let i = 0; i < 16; i++) {
      for (let j = 0; j < 64; j++) {
        let s = 0;
        for (let k = 0; k < 64; k++) s += DCT[i * 64 + k] * small[k * 64 + j];
        half[i * 64 + j] = s;
      }
    }
    const out = new Float64Array(256);  // (D * A) * D^T
    for (let i = 0; i < 16; i++) {
      for (let j = 0; j < 16; j++) {
        let s = 0;
        for (let k = 0; k < 64; k++) s += half[i * 64 + k] * DCT[j * 64 + k];
        out[i * 16 + j] = s;
      }
    }
    return out;
  }

  function pdqBits(coefficients) {
    const sorted = Float64Array.from(coefficients).sort();
    const median = (sorted[127] + sorted[128]) / 2;
    // packed as dupecheck stores it: np.packbits of pdqhash's 256 bits, whose bit k is
    // coefficient (15 - k // 16, 15 - k % 16)
    const bytes = new Uint8Array(32);
    for (let k = 0; k < 256; k++) {
      const i = 15 - Math.floor(k / 16), j = 15 - (k % 16);
      if (coefficients[i * 16 + j] > median) bytes[k >> 3] |= 0x80 >> (k & 7);
    }
    return bytes;
  }

  // The seven turns and mirror images of a hash's coefficients: a horizontal mirror flips
  // the sign of odd column frequencies (the DCT's index k stands for frequency k + 1), a
  // vertical one of odd rows, a transpose swaps them.
  function dihedral(coefficients) {
    const out = [];
    for (const transpose of [false, true]) {
      for (const flipRows of [false, true]) {
        for (const flipCols of [false, true]) {
          if (!transpose && !flipRows && !flipCols) continue;
          const c = new Float64Array(256);
          for (let i = 0; i < 16; i++) {
            for (let j = 0; j < 16; j++) {
              let v = transpose ? coefficients[j * 16 + i] : coefficients[i * 16 + j];
              if (flipRows && i % 2 === 0) v = -v;
              if (flipCols && j % 2 === 0) v = -v;
              c[i * 16 + j] = v;
            }
          }
          out.push(c);
        }
      }
    }
    return out;
  }

  function draw(bitmap, rect, width, height) {
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext("2d", {willReadFrequently: true});
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(bitmap, rect[0], rect[1], rect[2], rect[3], 0, 0, width, height);
    return ctx.getImageData(0, 0, width, height).data;
  }

  function pdqOf(bitmap, rect) {
    const scale = Math.min(1, PDQ_MAX_SIDE / Math.max(rect[2], rect[3]));
    const w = Math.max(1, Math.round(rect[2] * scale)), h = Math.max(1, Math.round(rect[3] * scale));
    return pdqCoefficients(draw(bitmap, rect, w, h), w, h);
  }

  function variants(width, height) {
    const out = [["full", [0, 0, width, height]]];
    for (const [name, aspect] of VARIANTS) {
      let rect;
      if (width / height > aspect) {
        const w = Math.max(1, pyRound(height * aspect));
        rect = [Math.floor((width - w) / 2), 0, w, height];
      } else {
        const h = Math.max(1, pyRound(width / aspect));
        rect = [0, Math.floor((height - h) / 2), width, h];
      }
      if (1 - (rect[2] * rect[3]) / (width * height) >= MIN_CROP_CHANGE) out.push([name, rect]);
    }
    return out;
  }

  async function pdq(blob) {
    const bitmap = await createImageBitmap(blob, {imageOrientation: "from-image", colorSpaceConversion: "none"});
    return Array.from(pdqBits(pdqOf(bitmap, [0, 0, bitmap.width, bitmap.height])));
  }

  // The model's embedding of a photo's full frame (for tests and scripts).
  async function embedding(blob) {
    const {header} = await load();
    const bitmap = await createImageBitmap(blob, {imageOrientation: "from-image", colorSpaceConversion: "none"});
    const [vector] = await embed(bitmap, [[0, 0, bitmap.width, bitmap.height]], header.input);
    return Array.from(vector);
  }

  // -- the model ----------------------------------------------------------------------------

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new Error("cannot load " + src));
      document.head.appendChild(s);
    });
  }

  async function model() {
    if (session) return session;
    if (!window.ort) await loadScript(ORT_BASE + "ort.wasm.min.js");
    window.ort.env.wasm.wasmPaths = ORT_BASE;
    window.ort.env.wasm.numThreads = 1;
    const hit = await (await caches.open(CACHE)).match("/offline/model");
    if (!hit) throw new Error("no model on this phone: keep a copy first");
    session = await window.ort.InferenceSession.create(new Uint8Array(await hit.arrayBuffer()),
                                                       {executionProviders: ["wasm"]});
    return session;
  }

  // Pillow's BILINEAR resize (what the CLI's model input uses): a triangle filter whose
  // support widens with the reduction (antialiased), one axis then the other, rounded to
  // 8 bits between the passes. The canvas's own scaling differs enough to move an
  // embedding (tests/test_page.py compares with the CLI's).
  function weights(inSize, outSize) {
    const scale = inSize / outSize, filterscale = Math.max(scale, 1), support = filterscale;
    const out = [];
    for (let o = 0; o < outSize; o++) {
      const centre = (o + 0.5) * scale;
      const lo = Math.max(Math.floor(centre - support + 0.5), 0);
      const hi = Math.min(Math.floor(centre + support + 0.5), inSize);
      const w = [];
      let total = 0;
      for (let x = lo; x < hi; x++) {
        const t = Math.abs((x - centre + 0.5) / filterscale);
        const v = t < 1 ? 1 - t : 0;
        w.push(v);
        total += v;
      }
      out.push([lo, w.map((v) => (total ? v / total : 0))]);
    }
    return out;
  }

  function resize(rgba, sw, sh, dw, dh) {
    const across = weights(sw, dw), down = weights(sh, dh);
    const mid = new Uint8ClampedArray(dw * sh * 3);
    for (let y = 0; y < sh; y++) {
      for (let x = 0; x < dw; x++) {
        const [lo, w] = across[x];
        let r = 0, g = 0, b = 0;
        for (let k = 0; k < w.length; k++) {
          const p = 4 * (y * sw + lo + k);
          r += w[k] * rgba[p]; g += w[k] * rgba[p + 1]; b += w[k] * rgba[p + 2];
        }
        const q = 3 * (y * dw + x);
        mid[q] = Math.round(r); mid[q + 1] = Math.round(g); mid[q + 2] = Math.round(b);
      }
    }
    const out = new Uint8ClampedArray(dw * dh * 3);
    for (let y = 0; y < dh; y++) {
      const [lo, w] = down[y];
      for (let x = 0; x < dw; x++) {
        let r = 0, g = 0, b = 0;
        for (let k = 0; k < w.length; k++) {
          const p = 3 * ((lo + k) * dw + x);
          r += w[k] * mid[p]; g += w[k] * mid[p + 1]; b += w[k] * mid[p + 2];
        }
        const q = 3 * (y * dw + x);
        out[q] = Math.round(r); out[q + 1] = Math.round(g); out[q + 2] = Math.round(b);
      }
    }
    return out;
  }

  // The model's input for one variant: shorter side resized, a centre square, normalised
  // (as imaging.to_model_input does).
  function modelInput(bitmap, rect, spec) {
    const [, , w, h] = rect;
    const shorter = Math.min(w, h), longer = Math.max(w, h);
    const newLong = Math.floor((spec.resize * longer) / shorter);
    const dw = w <= h ? spec.resize : newLong, dh = w <= h ? newLong : spec.resize;
    const rgb = resize(draw(bitmap, rect, w, h), w, h, dw, dh);
    const top = pyRound((dh - spec.crop) / 2), left = pyRound((dw - spec.crop) / 2);
    const plane = spec.crop * spec.crop;
    const out = new Float32Array(3 * plane);
    for (let y = 0; y < spec.crop; y++) {
      for (let x = 0; x < spec.crop; x++) {
        const p = 3 * ((y + top) * dw + (x + left));
        for (let c = 0; c < 3; c++) {
          out[c * plane + y * spec.crop + x] = (rgb[p + c] / 255 - spec.mean[c]) / spec.std[c];
        }
      }
    }
    return out;
  }

  async function embed(bitmap, views, spec) {
    const s = await model();
    const batch = new Float32Array(views.length * 3 * spec.crop * spec.crop);
    views.forEach((rect, i) => batch.set(modelInput(bitmap, rect, spec), i * 3 * spec.crop * spec.crop));
    const feeds = {pixels: new window.ort.Tensor("float32", batch,
                                                [views.length, 3, spec.crop, spec.crop])};
    const out = (await s.run(feeds)).embedding.data;
    const dim = out.length / views.length, vectors = [];
    for (let v = 0; v < views.length; v++) {
      const row = out.slice(v * dim, (v + 1) * dim);
      let norm = 0;
      for (const x of row) norm += x * x;
      norm = Math.sqrt(norm) || 1;
      vectors.push(row.map((x) => x / norm));
    }
    return vectors;
  }

  // -- the check ------------------------------------------------------------------------

  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const popcount = (x) => { x -= (x >> 1) & 0x55; x = (x & 0x33) + ((x >> 2) & 0x33); return (x + (x >> 4)) & 0x0f; };

  // options.threshold: as the CLI's --threshold (else the copy's threshold in force)
  async function check(blob, name, options = {}) {
    const copy = await load();
    const {header, n, dim} = copy;
    const photo = name || blob.name || "photo";
    const bytes = new Uint8Array(await blob.arrayBuffer());
    const sha = hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob, {imageOrientation: "from-image", colorSpaceConversion: "none"});
    } catch (err) {
      return {photo, verdict: "new", error: photo + ": this phone cannot decode it",
              matches: [], offline: true};
    }
    const vars = variants(bitmap.width, bitmap.height);
    const queries = [], names = [];
    vars.forEach(([vname, rect], i) => {
      const coefficients = pdqOf(bitmap, rect);
      queries.push(pdqBits(coefficients));
      names.push(vname);
      if (i === 0) {
        dihedral(coefficients).forEach((c, t) => { queries.push(pdqBits(c)); names.push("full, turned or mirrored " + (t + 1)); });
      }
    });
    const spec = header.input;
    const shorter = vars.map(([, r]) => Math.min(r[2], r[3]));
    const viewOf = shorter.map((s, i) => (s === shorter[0] ? shorter.indexOf(s) : i));
    const distinct = [...new Set(viewOf)];
    const vectors = await embed(bitmap, distinct.map((i) => vars[i][1]), spec);
    const scores = vectors.map((v) => copy.scorer(v));
    const skipped = new Set(header.not_pairs[sha] || []);
    const rows = [];
    for (let r = 0; r < n; r++) {
      const rowSha = hex(copy.sha.subarray(32 * r, 32 * r + 32));
      if (skipped.has(rowSha)) continue;
      let best = 1 << 16, bestName = names[0];
      queries.forEach((q, qi) => {
        let d = 0;
        for (let b = 0; b < 32; b++) d += popcount(q[b] ^ copy.pdq[32 * r + b]);
        if (d < best) { best = d; bestName = names[qi]; }
      });
      let cosine = -Infinity, cosVariant = vars[0][0];
      scores.forEach((score, vi) => {
        const s = score(r);
        if (s > cosine) { cosine = s; cosVariant = vars[distinct[vi]][0]; }
      });
      rows.push({row: r, sha: rowSha, pdq: best, pdqVariant: bestName, cosine, cosVariant});
    }
    const threshold = options.threshold ?? header.threshold;
    const similarOn = threshold < 1.0;
    const evidence = (m) => m.sha === sha ? "exact" : m.pdq <= PDQ_MATCH_DISTANCE
      ? "near-identical" : similarOn && m.cosine >= threshold ? "similar" : null;
    const group = (m) => ({"exact": 0, "near-identical": 1})[evidence(m)] ?? 3;
    rows.sort((a, b) => group(a) - group(b) || (group(a) === 1 ? a.pdq - b.pdq : 0)
              || b.cosine - a.cosine);
    const verdict = rows.some((m) => m.sha === sha) ? "exact"
      : rows.some((m) => m.pdq <= PDQ_MATCH_DISTANCE) ? "near-identical"
      : similarOn && rows.some((m) => m.cosine >= threshold) ? "similar" : "new";
    const matches = rows.slice(0, TOP_K).map((m, i) => {
      const ev = evidence(m), meta = header.rows[m.row];
      return {rank: i + 1, score: Math.round(m.cosine * 1e6) / 1e6, pdq_distance: m.pdq,
              evidence: ev, variant: ev === "exact" ? "full" : ev === "near-identical"
                ? m.pdqVariant : m.cosVariant,
              kind: meta.kind, taken_at: meta.taken_at, caption: meta.caption,
              carousel_index: meta.carousel_index, path: meta.path, row: m.row,
              inliers: null, transform: null};
    });
    // re-framed needs the computer's local features: said, for scripts as for the page
    const result = {photo, verdict, matches, offline: true, evidence_unavailable: ["re-framed"]};
    if (skipped.size) result.skipped = header.rows.filter((_, r) => skipped.has(hex(copy.sha.subarray(32 * r, 32 * r + 32)))).map((m) => m.path);
    return result;
  }

  function thumbnail(row) {
    if (!loaded) return null;
    const end = loaded.thumbEnds[row], start = row ? loaded.thumbEnds[row - 1] : 0;
    if (end <= start) return null;
    // a raster type the page decodes, whatever the copy says: nothing from the copy
    // becomes a document (an svg+xml "thumbnail" opened as a page would run script)
    if (!RASTER_THUMBS.includes(loaded.header.thumb_format)) return null;
    return URL.createObjectURL(new Blob([loaded.thumbs.slice(start, end)], {type: "image/" + loaded.header.thumb_format}));
  }

  window.dupecheck = window.dupecheck || {};
  // The saved copy's header, its rows left out: how it was made (format, encoding...).
  async function header() {
    const {rows, ...rest} = (await load()).header;
    return {...rest, rows: rows.length};
  }

  window.dupecheck.offline = {save, status, check, forget, pdq, embedding, thumbnail, header};
})();
