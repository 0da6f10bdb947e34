using System.Globalization;
using System.Net;
using System.Text;

namespace Doorbell.Reporting;

/// <summary>
/// A small builder for self-contained HTML reports (inline CSS, inline SVG, one optional inline script; nothing
/// fetched). Any command can build a page: headings, paragraphs, preformatted text, tables, SVG figures, then
/// <see cref="Write"/>. Text is always HTML-escaped; output depends only on what was added (no time, no paths).
/// </summary>
public sealed class HtmlPage(string title)
{
    readonly StringBuilder _body = new();
    readonly StringBuilder _css = new();
    string? _script;

    public const string BaseCss = """
        body{font-family:system-ui,sans-serif;margin:24px;color:#1d2330;background:#fff}
        h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccd}h3{font-size:15px}
        table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccd;padding:3px 8px;font-size:13px;text-align:left}
        pre{background:#f5f6fa;padding:8px;font-size:12px;overflow-x:auto}
        .ok{color:#176c2e}.bad{color:#b00020;font-weight:600}.warn{color:#9a5b00;font-weight:600}
        svg text{font-family:system-ui,sans-serif}
        """;

    public string Title { get; } = title;

    public HtmlPage Css(string css) { _css.AppendLine(css); return this; }
    public HtmlPage Heading(string text, int level = 2) { _body.Append(CultureInfo.InvariantCulture, $"<h{level}>{E(text)}</h{level}>\n"); return this; }
    public HtmlPage Paragraph(string text, string? cssClass = null) { _body.Append(cssClass is null ? "<p>" : $"<p class=\"{E(cssClass)}\">").Append(E(text)).Append("</p>\n"); return this; }
    public HtmlPage Pre(string text) { _body.Append("<pre>").Append(E(text)).Append("</pre>\n"); return this; }

    /// <summary>Adds raw markup the caller built (e.g. an <see cref="Svg"/>); the caller escapes its text.</summary>
    public HtmlPage Raw(string html) { _body.Append(html).Append('\n'); return this; }

    public HtmlPage Table(IReadOnlyList<string> header, IEnumerable<IReadOnlyList<string>> rows, Func<int, int, string?>? cellClass = null)
    {
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(rows);
        _body.Append("<table><tr>");
        foreach (var h in header) _body.Append("<th>").Append(E(h)).Append("</th>");
        _body.Append("</tr>\n");
        var r = 0;
        foreach (var row in rows)
        {
            _body.Append("<tr>");
            for (var c = 0; c < row.Count; c++)
            {
                var cls = cellClass?.Invoke(r, c);
                _body.Append(cls is null ? "<td>" : $"<td class=\"{E(cls)}\">").Append(E(row[c])).Append("</td>");
            }
            _body.Append("</tr>\n");
            r++;
        }
        _body.Append("</table>\n");
        return this;
    }

    /// <summary>One inline script run after load (e.g. to summarise what rendered).</summary>
    public HtmlPage Script(string js) { _script = js; return this; }

    public void Write(TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.Write("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
        w.Write(E(Title));
        w.Write("</title>\n<style>\n");
        w.Write(BaseCss);
        w.Write(_css.ToString());
        w.Write("</style></head>\n<body>\n<h1>");
        w.Write(E(Title));
        w.Write("</h1>\n");
        w.Write(_body.ToString());
        if (_script is not null) w.Write("<script>\n" + _script + "\n</script>\n");
        w.Write("</body></html>\n");
    }

    public override string ToString()
    {
        var sw = new StringWriter(CultureInfo.InvariantCulture);
        Write(sw);
        return sw.ToString();
    }

    /// <summary>HTML-escapes text.</summary>
    public static string E(string s) => WebUtility.HtmlEncode(s);
}

/// <summary>A minimal SVG builder (boxes, labels, arrows) for board and path drawings.</summary>
public sealed class Svg(int width, int height, string cssClass)
{
    readonly StringBuilder _sb = new();
    static string N(double v) => v.ToString("0.#", CultureInfo.InvariantCulture);

    public Svg Box(double x, double y, double w, double h, string label, string cssClass, string? title = null)
    {
        _sb.Append(CultureInfo.InvariantCulture, $"<g class=\"{HtmlPage.E(cssClass)}\">");
        if (title is not null) _sb.Append("<title>").Append(HtmlPage.E(title)).Append("</title>");
        _sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{N(x)}\" y=\"{N(y)}\" width=\"{N(w)}\" height=\"{N(h)}\" rx=\"6\"/>");
        var lines = label.Split('\n');
        for (var i = 0; i < lines.Length; i++)
            _sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(x + w / 2)}\" y=\"{N(y + h / 2 + (i - (lines.Length - 1) / 2.0) * 14 + 4)}\" text-anchor=\"middle\">{HtmlPage.E(lines[i])}</text>");
        _sb.Append("</g>");
        return this;
    }

    public Svg Frame(double x, double y, double w, double h, string label, string cssClass)
    {
        _sb.Append(CultureInfo.InvariantCulture, $"<g class=\"{HtmlPage.E(cssClass)}\"><rect x=\"{N(x)}\" y=\"{N(y)}\" width=\"{N(w)}\" height=\"{N(h)}\" rx=\"10\"/>");
        _sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(x + 8)}\" y=\"{N(y + h - 6)}\">{HtmlPage.E(label)}</text></g>");
        return this;
    }

    public Svg Arrow(double x1, double y1, double x2, double y2, string cssClass)
    {
        _sb.Append(CultureInfo.InvariantCulture, $"<line class=\"{HtmlPage.E(cssClass)}\" x1=\"{N(x1)}\" y1=\"{N(y1)}\" x2=\"{N(x2)}\" y2=\"{N(y2)}\" marker-end=\"url(#arrow)\"/>");
        return this;
    }

    public override string ToString() =>
        $"<svg class=\"{HtmlPage.E(cssClass)}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">" +
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#556\"/></marker></defs>" +
        _sb + "</svg>";
}
