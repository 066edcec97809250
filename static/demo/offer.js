/* Script content delivered by coremetrics into the "side-offer" placement of the demo shop. */
(function () {
  var script = document.currentScript;
  var host = script && script.parentNode;
  if (!host) return;
  var note = document.createElement("p");
  note.className = "offer-note";
  note.textContent = "Free sleeve of tees with any driver this week.";
  host.appendChild(note);
})();
