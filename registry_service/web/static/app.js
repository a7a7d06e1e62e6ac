// Progressive enhancement only: every page works without this file.
// Adds "Copy" buttons to code snippets, and keeps running merge jobs up to date in place: each row of
// an active job asks /jobs/<id>/status every two seconds and is replaced by the row it returns.
document.querySelectorAll(".snippet").forEach((box) => {
  const button = box.querySelector("button.copy");
  const code = box.querySelector("pre");
  if (!button || !code || !navigator.clipboard) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    await navigator.clipboard.writeText(code.innerText);
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
});

const POLL_MS = 2000;

async function follow(id) {
  let row = document.querySelector(`tr.job[data-job="${CSS.escape(id)}"]`);
  while (row && row.dataset.active) {
    await new Promise((done) => setTimeout(done, POLL_MS));
    let status;
    try {
      const answer = await fetch(`/jobs/${encodeURIComponent(id)}/status`, { headers: { Accept: "application/json" } });
      if (!answer.ok) return;
      status = await answer.json();
    } catch (e) {
      continue; // the network hiccuped: try again next time
    }
    const template = document.createElement("template");
    template.innerHTML = status.row.trim();
    const fresh = template.content.firstElementChild;
    row.replaceWith(fresh);
    row = fresh;
    const duration = document.querySelector("dd.duration");
    if (duration && document.querySelectorAll("tr.job").length === 1) duration.textContent = status.duration;
  }
}

document.querySelectorAll("tr.job[data-active]").forEach((row) => follow(row.dataset.job));
