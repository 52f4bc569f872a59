#include "plot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "dsa_indexer.h"

namespace dsa_bench {
namespace {

bool parse_batch_by_length(const std::string& name, int* batch, double* length) {
    const size_t x = name.find('x');
    if (x == 0 || x == std::string::npos || x + 1 >= name.size()) return false;
    for (size_t i = 0; i < name.size(); ++i)
        if (i != x && (name[i] < '0' || name[i] > '9')) return false;
    *batch = std::atoi(name.substr(0, x).c_str());
    *length = std::atof(name.substr(x + 1).c_str());
    return *batch > 0 && *length > 0;
}

std::string xml_escape(const std::string& s) {
    std::string out;
    for (char ch : s) {
        if (ch == '&') out += "&amp;";
        else if (ch == '<') out += "&lt;";
        else if (ch == '>') out += "&gt;";
        else if (ch == '"') out += "&quot;";
        else out += ch;
    }
    return out;
}

struct PlotAxis {
    double lo, hi;  // data range
    bool log;
    double pixel_lo, pixel_hi;
    double map(double v) const {
        const double t = log ? (std::log(v) - std::log(lo)) / (std::log(hi) - std::log(lo)) : (v - lo) / (hi - lo);
        return pixel_lo + t * (pixel_hi - pixel_lo);
    }
};

std::string format_length(double tokens) {
    char text[32];
    if (tokens >= 1024 && std::fmod(tokens, 1024) == 0) std::snprintf(text, sizeof text, "%gK", tokens / 1024);
    else std::snprintf(text, sizeof text, "%g", tokens);
    return text;
}

// One panel: axes, ticks, labels and a polyline with markers per batch size. Points are (L, value).
void plot_panel(FILE* f, double left, double top, double width, double height, const std::string& title,
                const std::string& y_label, bool y_log, const std::map<int, std::vector<std::pair<double, double>>>& lines,
                const PlotAxis& x_data, const char* const* colors, size_t num_colors, const std::string& empty_note) {
    std::fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-weight=\"bold\">%s</text>\n",
                 left + width / 2, top - 10, xml_escape(title).c_str());
    std::fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#444\"/>\n",
                 left, top, width, height);
    PlotAxis x = x_data;
    x.pixel_lo = left;
    x.pixel_hi = left + width;
    for (double tick = std::pow(2.0, std::floor(std::log2(x.lo))); tick <= x.hi * 1.0001; tick *= 2) {
        if (tick < x.lo * 0.9999) continue;
        const double px = x.map(tick);
        std::fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", px, top, px,
                     top + height);
        std::fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%s</text>\n", px,
                     top + height + 15, format_length(tick).c_str());
    }
    std::fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">context length L (tokens)</text>\n",
                 left + width / 2, top + height + 34);
    std::fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">%s</text>\n",
                 left - 48, top + height / 2, xml_escape(y_label).c_str());

    double y_min = INFINITY, y_max = 0;
    for (const auto& line : lines)
        for (const auto& point : line.second) {
            y_min = std::min(y_min, point.second);
            y_max = std::max(y_max, point.second);
        }
    if (!(y_max > 0)) {
        std::fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#888\">%s</text>\n",
                     left + width / 2, top + height / 2, xml_escape(empty_note).c_str());
        return;
    }
    PlotAxis y{0, 0, y_log, top + height, top};
    std::vector<double> ticks;
    if (y_log) {  // whole decades around the data, ticks at 1, 2, 5 x 10^k
        y.lo = std::pow(10.0, std::floor(std::log10(y_min)));
        y.hi = std::pow(10.0, std::ceil(std::log10(y_max)));
        if (y.hi <= y.lo) y.hi = y.lo * 10;
        for (double decade = y.lo; decade < y.hi * 1.0001; decade *= 10)
            for (double m : {1.0, 2.0, 5.0})
                if (decade * m <= y.hi * 1.0001) ticks.push_back(decade * m);
    } else {  // 0 .. 100 %, or beyond when a point is above the floor line
        y.lo = 0;
        y.hi = std::max(100.0, std::ceil(y_max / 20) * 20);
        for (double t = 0; t <= y.hi + 1e-9; t += 20) ticks.push_back(t);
    }
    for (double t : ticks) {
        const double py = y.map(t);
        std::fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, py,
                     left + width, py);
        std::fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%g</text>\n", left - 5,
                     py + 4, t);
    }
    size_t series = 0;
    for (const auto& line : lines) {
        const char* color = colors[series++ % num_colors];
        std::string points;
        for (const auto& point : line.second) {
            char xy[64];
            std::snprintf(xy, sizeof xy, "%.1f,%.1f ", x.map(point.first), y.map(point.second));
            points += xy;
        }
        std::fprintf(f, "<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"/>\n", points.c_str(),
                     color);
        for (const auto& point : line.second)  // markers, so that a batch size with one length still shows
            std::fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>B=%d L=%s: %.4g</title></circle>\n",
                         x.map(point.first), y.map(point.second), color, line.first,
                         format_length(point.first).c_str(), point.second);
    }
}

}  // namespace

bool write_plot(const std::string& path, const std::vector<Result>& results, const std::string& device_name) {
    std::map<int, std::vector<std::pair<double, double>>> latency, floor_percent;
    double x_min = INFINITY, x_max = 0;
    for (const Result& r : results) {
        int batch = 0;
        double length = 0;
        if (!parse_batch_by_length(r.name, &batch, &length) || !(r.latency_us > 0)) continue;
        latency[batch].push_back({length, r.latency_us});
        if (r.floor_us > 0) floor_percent[batch].push_back({length, 100.0 * r.floor_us / r.latency_us});
        x_min = std::min(x_min, length);
        x_max = std::max(x_max, length);
    }
    for (auto* lines : {&latency, &floor_percent})
        for (auto& line : *lines) std::sort(line.second.begin(), line.second.end());
    if (!(x_max > 0)) x_min = x_max = 1024;  // no BxL workload: empty panels, still a valid picture
    PlotAxis x{x_min / 1.5, x_max * 1.5, true, 0, 0};

    FILE* f = std::fopen(path.c_str(), "w");
    if (!f) return false;
    const double width = 1000, height = 470, panel_w = 360, panel_h = 330, top = 70;
    static const char* const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
    const size_t num_colors = sizeof colors / sizeof colors[0];
    std::fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    std::fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
                    "font-family=\"sans-serif\" font-size=\"13\">\n", width, height, width, height);
    std::fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    const int version = dsa_version();
    std::fprintf(f, "<text x=\"%g\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">dsa_bench on %s, library %d.%d.%d: "
                    "paged decode top-k, workloads B x L</text>\n", width / 2, xml_escape(device_name).c_str(),
                 version / 10000, version / 100 % 100, version % 100);
    plot_panel(f, 80, top, panel_w, panel_h, "latency", "latency (us, log scale)", true, latency, x, colors, num_colors,
               "no B x L workload was run");
    plot_panel(f, 80 + panel_w + 100, top, panel_w, panel_h, "% of the bandwidth floor", "floor / latency (%)", false,
               floor_percent, x, colors, num_colors, "no bandwidth floor on this backend");
    size_t series = 0;  // legend, right of the panels
    for (const auto& line : latency) {
        const double ly = top + 10 + 22 * double(series);
        std::fprintf(f, "<line x1=\"905\" y1=\"%.1f\" x2=\"930\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"/>\n", ly,
                     ly, colors[series % num_colors]);
        std::fprintf(f, "<text x=\"936\" y=\"%.1f\">B = %d</text>\n", ly + 4, line.first);
        ++series;
    }
    std::fprintf(f, "</svg>\n");
    return std::fclose(f) == 0;
}

}  // namespace dsa_bench
