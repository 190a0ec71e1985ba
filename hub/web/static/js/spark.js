// A sparkline drawn as SVG: no chart library.
import {h} from "./h.js";

export function sparkline(values, {max = null, width = 120, height = 28, label = ""} = {}) {
  const svg = h("svg:svg", {class: "spark", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": label});
  const points = values.filter((v) => typeof v === "number" && isFinite(v));
  if (points.length === 0) return svg;
  const top = max ?? Math.max(...points, 1e-9);
  const step = points.length > 1 ? width / (points.length - 1) : 0;
  const coords = points.map((v, i) => {
    const y = height - 1 - (Math.min(v, top) / top) * (height - 2);
    return `${(i * step).toFixed(1)},${y.toFixed(1)}`;
  });
  if (points.length === 1) coords.push(`${width},${coords[0].split(",")[1]}`);
  svg.append(h("svg:polyline", {points: coords.join(" "), fill: "none", stroke: "currentColor",
    "stroke-width": 1.5}));
  svg.append(h("svg:title", label));
  return svg;
}
