// Headstart's folder uploader (a Streamlit v2 component; pages/_folder_upload.py is its Python side).
//
// Streamlit's own folder uploader sends every file at once: with thousands of pictures Chromium drops requests
// (net::ERR_INSUFFICIENT_RESOURCES) and the data set arrives with holes. Here the browser sends the folder in
// batches of bounded size, one batch at a time, and waits for the server to confirm each before the next. A batch
// the server has not confirmed in time is sent again; the server writes each file once, so that is safe.
//
// Protocol, one event at a time (trigger "event"), each acknowledged through the component's data:
//   {kind: "announce", token, seq, names, sizes, modified}  -> data: {token, ack: seq, needed: [[from, to], ...]}
//   {kind: "batch", token, seq, files: [{i, b64}], unreadable: [{i, why}]}  -> data: {token, ack: seq}
//   {kind: "finish", token, seq}  -> the page reruns with the data set, or says which files are missing.

const BATCH_BYTES = 4 * 1024 * 1024; // raw bytes per batch (base64 makes them a third bigger on the wire)
const BATCH_FILES = 256;
const ACK_TIMEOUT_MS = 60_000;
const RETRIES = 3;

const uploads = (window.__headstartFolderUploads ??= { current: null, data: null, waiters: [] });

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] ?? "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function expand(ranges) {
  const out = [];
  for (const [from, to] of ranges) for (let i = from; i < to; i++) out.push(i);
  return out;
}

function acknowledged(token, seq) {
  const data = uploads.data;
  return data && data.token === token && data.ack >= seq;
}

function waitForAck(token, seq) {
  return new Promise((resolve) => {
    if (acknowledged(token, seq)) return resolve(true);
    const waiter = { token, seq, resolve };
    uploads.waiters.push(waiter);
    setTimeout(() => {
      uploads.waiters = uploads.waiters.filter((w) => w !== waiter);
      resolve(false);
    }, ACK_TIMEOUT_MS);
  });
}

async function send(upload, event) {
  event.token = upload.token;
  event.seq = ++upload.seq;
  for (let attempt = 0; attempt <= RETRIES; attempt++) {
    if (upload.cancelled) throw new Error("cancelled");
    uploads.setTriggerValue("event", event);
    if (await waitForAck(upload.token, event.seq)) return uploads.data;
  }
  throw new Error("the server did not confirm the pictures it received");
}

function show(text, fraction) {
  const root = uploads.root;
  if (!root) return;
  root.querySelector(".status").textContent = text;
  const bar = root.querySelector(".bar");
  bar.hidden = fraction === null;
  if (fraction !== null) bar.value = fraction;
}

async function upload(files) {
  if (uploads.current) uploads.current.cancelled = true;
  const token = crypto.getRandomValues(new Uint32Array(2)).join("-");
  const current = { token, seq: 0, cancelled: false };
  uploads.current = current;
  const names = files.map((f) => f.webkitRelativePath || f.name);
  try {
    show(`Checking ${files.length.toLocaleString()} files...`, 0);
    const reply = await send(current, {
      kind: "announce",
      names,
      sizes: files.map((f) => f.size),
      modified: files.map((f) => f.lastModified / 1000),
    });
    const needed = expand(reply.needed || []);
    const expected = reply.expected ?? needed.length;
    let done = expected - needed.length;
    const totalBytes = needed.reduce((sum, i) => sum + files[i].size, 0);
    let sentBytes = 0;
    for (let start = 0; start < needed.length; ) {
      const batch = { kind: "batch", files: [], unreadable: [] };
      let bytes = 0;
      while (start < needed.length && batch.files.length < BATCH_FILES) {
        const i = needed[start];
        if (batch.files.length && bytes + files[i].size > BATCH_BYTES) break;
        try {
          batch.files.push({ i, b64: await readBase64(files[i]) });
          bytes += files[i].size;
        } catch (err) {
          batch.unreadable.push({ i, why: String(err && err.message ? err.message : err) });
        }
        start++;
      }
      await send(current, batch);
      done += batch.files.length;
      sentBytes += bytes;
      const mb = (n) => (n / 1024 ** 2).toFixed(1);
      show(
        `Received ${done.toLocaleString()} of ${expected.toLocaleString()} files (${mb(sentBytes)} of ${mb(totalBytes)} MB)`,
        expected ? done / expected : 1,
      );
    }
    show(`Received ${done.toLocaleString()} of ${expected.toLocaleString()} files. Checking them...`, 1);
    const last = await send(current, { kind: "finish" });
    show(last.status || "", null);
  } catch (err) {
    if (!current.cancelled) show(`The upload stopped: ${err.message}. Pick the folder again to send the rest.`, null);
  } finally {
    if (uploads.current === current) uploads.current = null;
  }
}

function build(parentElement) {
  const root = document.createElement("div");
  root.className = "hs-folder-upload";
  root.innerHTML = `
    <label class="pick">
      <input type="file" webkitdirectory multiple data-testid="hs-folder-input" />
      <span class="button">Choose a folder</span>
      <span class="hint">or drop it here. Every file is sent in batches and checked on arrival.</span>
    </label>
    <progress class="bar" max="1" value="0" hidden></progress>
    <div class="status" role="status" aria-live="polite"></div>`;
  const input = root.querySelector("input");
  input.addEventListener("change", () => {
    const files = Array.from(input.files || []);
    if (files.length) upload(files);
  });
  root.addEventListener("dragover", (e) => e.preventDefault());
  root.addEventListener("drop", async (e) => {
    e.preventDefault();
    const entries = Array.from(e.dataTransfer.items || [], (item) => item.webkitGetAsEntry && item.webkitGetAsEntry());
    const files = await filesFromEntries(entries.filter(Boolean));
    if (files.length) upload(files);
    else show("Drop a folder (one sub-folder of pictures per class), or use Choose a folder.", null);
  });
  parentElement.appendChild(root);
  return root;
}

// A dropped folder, walked like the folder picker does: each File gets its path inside the folder.
async function filesFromEntries(entries) {
  const files = [];
  const walk = async (entry) => {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      Object.defineProperty(file, "webkitRelativePath", { value: entry.fullPath.replace(/^\//, "") });
      files.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  };
  for (const entry of entries) await walk(entry);
  return files;
}

export default function ({ data, parentElement, setTriggerValue }) {
  uploads.setTriggerValue = setTriggerValue;
  uploads.data = data;
  uploads.root = parentElement.querySelector(".hs-folder-upload") || build(parentElement);
  if (data && data.status && !uploads.current) show(data.status, null);
  const ready = uploads.waiters.filter((w) => acknowledged(w.token, w.seq));
  uploads.waiters = uploads.waiters.filter((w) => !ready.includes(w));
  ready.forEach((w) => w.resolve(true));
}
