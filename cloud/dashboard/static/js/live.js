// The live stream (SSE): one EventSource for the whole app; pages subscribe to the kinds they show.
import { liveUrl } from "./api.js";

const listeners = new Set();
let source = null;
let retry = null;
let status = () => {};

/** Open the stream; `onStatus` gets "connecting", "on" or "off". */
export function connect(onStatus) {
  status = onStatus;
  disconnect();
  status("connecting");
  source = new EventSource(liveUrl());
  source.onopen = () => status("on");
  source.onerror = () => {
    status("off");
    // EventSource retries by itself unless the server refused (closed); then we try again ourselves.
    if (source.readyState === EventSource.CLOSED) retry = setTimeout(() => connect(status), 5000);
  };
  for (const kind of ["state", "oee", "alarm", "anomaly"]) {
    source.addEventListener(kind, (e) => {
      let data;
      try {
        data = JSON.parse(e.data);
      } catch {
        return;
      }
      for (const fn of listeners) fn(kind, data);
    });
  }
}

export function disconnect() {
  clearTimeout(retry);
  if (source) source.close();
  source = null;
}

/** Call fn(kind, data) for every event until the returned function is called. */
export function listen(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
