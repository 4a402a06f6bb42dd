// llamabatch view: live updates for a run that is still writing. The page's <main> names a
// status URL in data-poll; when the stored rows change, the page's content is fetched again
// (already escaped by the server) and swapped in. Nothing here reads data into the DOM.
"use strict";
(function () {
  const main = document.getElementById("live");
  if (!main || !main.dataset.poll) return;
  const statusUrl = main.dataset.poll;
  let last = null;
  async function tick() {
    let state;
    try {
      state = await (await fetch(statusUrl, { cache: "no-store" })).json();
    } catch (err) {
      setTimeout(tick, 5000);
      return;
    }
    if (last !== null && state.signature !== last) {
      const url = new URL(window.location.href);
      url.searchParams.set("fragment", "1");
      const body = await (await fetch(url, { cache: "no-store" })).text();
      const parsed = new DOMParser().parseFromString(body, "text/html");
      main.replaceChildren(...parsed.body.childNodes);
    }
    last = state.signature;
    if (state.live) setTimeout(tick, 2000);
    else if (last !== null) main.dataset.poll = "";
  }
  tick();
})();
