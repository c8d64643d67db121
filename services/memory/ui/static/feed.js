// The live feed: asks for the events after the newest one shown, every two seconds, and puts them on top.
(function () {
  const table = document.getElementById("feed");
  if (!table) return;
  const body = table.tBodies[0];
  const prefix = document.querySelector("a.brand").getAttribute("href").replace(/\/$/, "");
  let after = Number(table.dataset.after || 0);

  function cell(row, text, href) {
    const td = row.insertCell();
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
    return td;
  }

  async function poll() {
    try {
      const response = await fetch(prefix + "/events.json?after=" + after);
      if (response.ok) {
        for (const line of await response.json()) {
          const row = body.insertRow(0);
          row.dataset.seq = line.seq;
          cell(row, String(line.seq)).className = "num";
          cell(row, line.at);
          cell(row, line.name);
          const id = line.experiment_id;
          cell(row, id || "–", id ? prefix + "/experiments/" + encodeURIComponent(id) : null);
          cell(row, line.text);
          after = Math.max(after, line.seq);
        }
      }
    } catch (error) {
      // The service restarting: try again at the next tick.
    }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 2000);
})();
