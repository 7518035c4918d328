/* Lengths and areas on the CGCS2000 ellipsoid (GRS80: a = 6378137 m, f = 1/298.257222101),
   as a planner reads them: m / km, m² / ha / 亩 (1 亩 = 10000/15 m², never stored).

   Length: Vincenty's inverse formula (geodesic distance, ~0.1 mm on the ellipsoid; it fails to
   converge only for nearly antipodal points, which no county map draws: it throws then).
   Area of a polygon whose edges are geodesics: each edge is densified along its geodesic
   (Vincenty's direct formula) to pieces of at most 2 km, the vertices are mapped to the
   authalic (equal-area) sphere, and the spherical polygon's area is summed exactly edge by edge.
   The mapping is equal-area, so the only error is that a 2 km piece of a geodesic is not a
   great circle on the authalic sphere: a few micrometres of sagitta, under 1e-8 of the area.
   Agrees with GeographicLib (Karney; pyproj.Geod(ellps="GRS80")) well within 1e-6, tested.

   Plain script: window.geobaseGeodesic in the page, module.exports under node. */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.geobaseGeodesic = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  const A = 6378137, F = 1 / 298.257222101, B = A * (1 - F);
  const E2 = F * (2 - F), E = Math.sqrt(E2);
  const RAD = Math.PI / 180;
  const MU_M2 = 10000 / 15;
  const PIECE_M = 2000;

  function inverse(lon1, lat1, lon2, lat2) {
    /* Geodesic distance (m) and initial azimuth (rad) from point 1 to point 2 (degrees). */
    if (lon1 === lon2 && lat1 === lat2) return {s: 0, azi1: 0};
    const L = wrap((lon2 - lon1) * RAD);
    const U1 = Math.atan((1 - F) * Math.tan(lat1 * RAD)), U2 = Math.atan((1 - F) * Math.tan(lat2 * RAD));
    const sinU1 = Math.sin(U1), cosU1 = Math.cos(U1), sinU2 = Math.sin(U2), cosU2 = Math.cos(U2);
    let lambda = L, prev, sinSigma, cosSigma, sigma, cos2Alpha, cos2SigmaM, sinLambda, cosLambda;
    let iter = 0;
    do {
      sinLambda = Math.sin(lambda); cosLambda = Math.cos(lambda);
      const t1 = cosU2 * sinLambda, t2 = cosU1 * sinU2 - sinU1 * cosU2 * cosLambda;
      sinSigma = Math.sqrt(t1 * t1 + t2 * t2);
      if (sinSigma === 0) return {s: 0, azi1: 0};
      cosSigma = sinU1 * sinU2 + cosU1 * cosU2 * cosLambda;
      sigma = Math.atan2(sinSigma, cosSigma);
      const sinAlpha = cosU1 * cosU2 * sinLambda / sinSigma;
      cos2Alpha = 1 - sinAlpha * sinAlpha;
      cos2SigmaM = cos2Alpha !== 0 ? cosSigma - 2 * sinU1 * sinU2 / cos2Alpha : 0;  // equatorial line
      const C = F / 16 * cos2Alpha * (4 + F * (4 - 3 * cos2Alpha));
      prev = lambda;
      lambda = L + (1 - C) * F * sinAlpha * (sigma + C * sinSigma * (cos2SigmaM + C * cosSigma * (-1 + 2 * cos2SigmaM * cos2SigmaM)));
      if (++iter > 200) throw new Error("geodesic: no convergence (nearly antipodal points)");
    } while (Math.abs(lambda - prev) > 1e-13);
    const u2 = cos2Alpha * (A * A - B * B) / (B * B);
    const bigA = 1 + u2 / 16384 * (4096 + u2 * (-768 + u2 * (320 - 175 * u2)));
    const bigB = u2 / 1024 * (256 + u2 * (-128 + u2 * (74 - 47 * u2)));
    const dSigma = bigB * sinSigma * (cos2SigmaM + bigB / 4 * (cosSigma * (-1 + 2 * cos2SigmaM * cos2SigmaM) -
      bigB / 6 * cos2SigmaM * (-3 + 4 * sinSigma * sinSigma) * (-3 + 4 * cos2SigmaM * cos2SigmaM)));
    const azi1 = Math.atan2(cosU2 * sinLambda, cosU1 * sinU2 - sinU1 * cosU2 * cosLambda);
    return {s: B * bigA * (sigma - dSigma), azi1};
  }

  function direct(lon1, lat1, azi1, s) {
    /* The point (degrees) at distance s (m) from point 1 along initial azimuth azi1 (rad). */
    const sinAlpha1 = Math.sin(azi1), cosAlpha1 = Math.cos(azi1);
    const tanU1 = (1 - F) * Math.tan(lat1 * RAD), cosU1 = 1 / Math.sqrt(1 + tanU1 * tanU1), sinU1 = tanU1 * cosU1;
    const sigma1 = Math.atan2(tanU1, cosAlpha1);
    const sinAlpha = cosU1 * sinAlpha1, cos2Alpha = 1 - sinAlpha * sinAlpha;
    const u2 = cos2Alpha * (A * A - B * B) / (B * B);
    const bigA = 1 + u2 / 16384 * (4096 + u2 * (-768 + u2 * (320 - 175 * u2)));
    const bigB = u2 / 1024 * (256 + u2 * (-128 + u2 * (74 - 47 * u2)));
    let sigma = s / (B * bigA), prev, cos2SigmaM, sinSigma, cosSigma, iter = 0;
    do {
      cos2SigmaM = Math.cos(2 * sigma1 + sigma);
      sinSigma = Math.sin(sigma); cosSigma = Math.cos(sigma);
      const dSigma = bigB * sinSigma * (cos2SigmaM + bigB / 4 * (cosSigma * (-1 + 2 * cos2SigmaM * cos2SigmaM) -
        bigB / 6 * cos2SigmaM * (-3 + 4 * sinSigma * sinSigma) * (-3 + 4 * cos2SigmaM * cos2SigmaM)));
      prev = sigma;
      sigma = s / (B * bigA) + dSigma;
      if (++iter > 200) throw new Error("geodesic: no convergence");
    } while (Math.abs(sigma - prev) > 1e-13);
    sinSigma = Math.sin(sigma); cosSigma = Math.cos(sigma); cos2SigmaM = Math.cos(2 * sigma1 + sigma);
    const x = sinU1 * sinSigma - cosU1 * cosSigma * cosAlpha1;
    const lat2 = Math.atan2(sinU1 * cosSigma + cosU1 * sinSigma * cosAlpha1, (1 - F) * Math.sqrt(sinAlpha * sinAlpha + x * x));
    const lambda = Math.atan2(sinSigma * sinAlpha1, cosU1 * cosSigma - sinU1 * sinSigma * cosAlpha1);
    const C = F / 16 * cos2Alpha * (4 + F * (4 - 3 * cos2Alpha));
    const L = lambda - (1 - C) * F * sinAlpha * (sigma + C * sinSigma * (cos2SigmaM + C * cosSigma * (-1 + 2 * cos2SigmaM * cos2SigmaM)));
    return [lon1 + L / RAD, lat2 / RAD];
  }

  function wrap(x) { while (x > Math.PI) x -= 2 * Math.PI; while (x <= -Math.PI) x += 2 * Math.PI; return x; }

  function q(sinPhi) {  // the authalic latitude's q(φ)
    return (1 - E2) * (sinPhi / (1 - E2 * sinPhi * sinPhi) - Math.log((1 - E * sinPhi) / (1 + E * sinPhi)) / (2 * E));
  }
  const QP = q(1), RQ2 = A * A * QP / 2;
  const authalic = (latDeg) => Math.asin(Math.max(-1, Math.min(1, q(Math.sin(latDeg * RAD)) / QP)));

  function length(coords) {
    /* Length (m) of a line [[lon, lat], ...] along geodesics. */
    let s = 0;
    for (let i = 1; i < coords.length; i++) s += inverse(coords[i - 1][0], coords[i - 1][1], coords[i][0], coords[i][1]).s;
    return s;
  }

  function densified(ring) {
    const out = [];
    for (let i = 0; i < ring.length; i++) {
      const p = ring[i], q2 = ring[(i + 1) % ring.length];
      out.push(p);
      const {s, azi1} = inverse(p[0], p[1], q2[0], q2[1]);
      const n = Math.ceil(s / PIECE_M);
      for (let k = 1; k < n; k++) out.push(direct(p[0], p[1], azi1, s * k / n));
    }
    return out;
  }

  function area(ring) {
    /* Area (m², positive) of the polygon [[lon, lat], ...] (open or closed ring, geodesic edges,
       not enclosing a pole). */
    const pts = ring.slice();
    if (pts.length > 1 && pts[0][0] === pts[pts.length - 1][0] && pts[0][1] === pts[pts.length - 1][1]) pts.pop();
    if (pts.length < 3) return 0;
    const d = densified(pts).map((p) => [p[0] * RAD, authalic(p[1])]);
    let sum = 0;
    for (let i = 0; i < d.length; i++) {
      const [l1, b1] = d[i], [l2, b2] = d[(i + 1) % d.length];
      const t1 = Math.tan(b1 / 2), t2 = Math.tan(b2 / 2);
      sum += 2 * Math.atan2(Math.tan(wrap(l2 - l1) / 2) * (t1 + t2), 1 + t1 * t2);
    }
    return Math.abs(sum) * RQ2;
  }

  const num = (x, digits) => x.toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits});

  function formatLength(m) {
    return m < 1000 ? num(m, 2) + " m" : num(m / 1000, 3) + " km";
  }

  function formatArea(m2) {
    /* m² with ha and 亩 beside it (1 亩 = 10000/15 m²), as planners read them. */
    return num(m2, 2) + " m² · " + num(m2 / 10000, 4) + " ha · " + num(m2 / MU_M2, 2) + " 亩";
  }

  return {inverse, direct, length, area, formatLength, formatArea, MU_M2, A, F};
});
