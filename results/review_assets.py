"""The review page's static assets (results.review_page): its inline style sheet, its script (sorting, the
filter, the flag buttons, the preview, the keys) and the fixed HTML of the keys' help and the preview panel.
Nothing here depends on the cases shown."""

# Compact rows (one text line each: 30 and more on a laptop's screen); the picture of the case under the mouse,
# or the one chosen by a click or the keys, large in a panel beside the table.
STYLE = """
body{font:13px/1.3 system-ui,sans-serif;margin:.6em .8em;color:#222}
h1{font-size:1.25em;margin:0 0 .3em}
.warning{color:#fff;background:#b00;padding:.3em .6em;font-weight:bold;display:inline-block;margin:0 0 .3em}
dl{display:grid;grid-template-columns:max-content auto;gap:0 1em;margin:.3em 0;font-size:.92em}
dt{color:#666}dd{margin:0;word-break:break-all}
.flags button{margin:.15em .3em .15em 0;padding:.1em .55em;border:1px solid #b00;background:#fff5f5;
border-radius:1em;cursor:pointer;font:inherit}
.flags button[aria-pressed=true]{background:#b00;color:#fff}
.rule{color:#555;font-size:.9em;margin:.2em 0 .3em;padding-left:1.4em}
#layout{display:flex;gap:.8em;align-items:flex-start}
#list{flex:1 1 auto;min-width:0;overflow-x:auto}
#preview{flex:0 0 36%;position:sticky;top:.3em;max-height:calc(100vh - .6em);overflow:auto;border:1px solid #ccc;
padding:.3em;background:#fafafa;box-sizing:border-box}
#preview img{display:block;width:100%;height:auto;max-height:calc(100vh - 5em);object-fit:contain}
#preview img[hidden]{display:none}
#preview-title{font-weight:600}#preview-info{color:#b00;margin-top:.2em}
@media (max-width:1000px){#layout{display:block}#preview{position:fixed;left:0;right:0;bottom:0;top:auto;
max-height:45vh;z-index:2}#preview img{max-height:38vh}}
table{border-collapse:collapse;font-size:12px}
th,td{border-bottom:1px solid #e6e6e6;padding:1px 5px;text-align:left;white-space:nowrap;line-height:18px}
th{position:sticky;top:0;background:#f0f0f0;cursor:pointer;user-select:none;z-index:1}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr{cursor:pointer}tbody tr:hover{background:#f2f6ff}
tr.failed{background:#fff0f0}tr.selected,tr.selected:hover{background:#dde9ff;outline:2px solid #36c}
.error,.note{display:inline-block;max-width:12em;overflow:hidden;text-overflow:ellipsis;vertical-align:bottom;
margin-left:.4em}
.error{color:#b00}.note{color:#8a5a00}
.flag{display:inline-block;background:#b00;color:#fff;border-radius:.8em;padding:0 .45em;margin-right:.2em;
font-size:11px;line-height:15px}
.links a{margin-right:.45em}
input[type=search]{font:inherit;padding:.15em .3em;width:22em}
.means{margin:.3em 0}.keys{color:#555}
kbd{border:1px solid #bbb;border-radius:3px;padding:0 .25em;background:#fff;font-size:.9em}
"""

# Sorting (a click on a header; again: the other way), the text filter, the flag buttons, the preview (hover or
# click a row) and the keys (j or down: next case, k or up: previous, Enter or o: the picture alone). The state
# lives in the URL's fragment, so that a page that reloads itself during a run keeps it, the chosen case too.
SCRIPT = """
(function(){
const table=document.getElementById('cases'),body=table.tBodies[0],filter=document.getElementById('filter');
const shown=document.getElementById('shown'),buttons=[...document.querySelectorAll('.flags button')];
const img=document.getElementById('preview-img'),link=document.getElementById('preview-link');
const title=document.getElementById('preview-title'),info=document.getElementById('preview-info');
let sortKey=null,sortDir=1,selected=null;
function apply(){
  const q=filter.value.trim().toLowerCase();
  const wanted=buttons.filter(b=>b.getAttribute('aria-pressed')==='true').map(b=>b.dataset.flag);
  let n=0;
  for(const tr of body.rows){
    const flags=(tr.dataset.flags||'').split(' ');
    const ok=(!q||tr.textContent.toLowerCase().includes(q))&&wanted.every(f=>flags.includes(f));
    tr.hidden=!ok;n+=ok;
  }
  shown.textContent=n+' of '+body.rows.length+' cases shown';
  save();
}
function save(){
  const state=new URLSearchParams(),q=filter.value.trim().toLowerCase();
  const wanted=buttons.filter(b=>b.getAttribute('aria-pressed')==='true').map(b=>b.dataset.flag);
  if(q)state.set('q',q);if(sortKey!==null)state.set('sort',sortKey+':'+sortDir);
  if(wanted.length)state.set('flags',wanted.join(','));if(selected)state.set('case',selected.dataset.index);
  history.replaceState(null,'',state.toString()?'#'+state.toString():location.pathname);
}
function value(tr,i){return tr.cells[i].dataset.sort||'';}
function sortBy(i,dir){
  sortKey=i;sortDir=dir;const numeric=table.tHead.rows[0].cells[i].dataset.type==='num';
  const rows=[...body.rows];
  rows.sort((a,b)=>{const x=value(a,i),y=value(b,i);
    if(x===''||y==='')return (x==='')-(y==='')||(+a.dataset.index)-(+b.dataset.index);
    const c=numeric?(+x)-(+y):x.localeCompare(y);return c*dir||(+a.dataset.index)-(+b.dataset.index);});
  rows.forEach(r=>body.appendChild(r));
  [...table.tHead.rows[0].cells].forEach((th,j)=>th.setAttribute('aria-sort',j===i?(dir>0?'ascending':'descending'):'none'));
  apply();
}
function show(tr){
  if(!tr){title.textContent='Hover over a case or click it: its picture shows here';img.hidden=true;
    img.removeAttribute('src');info.textContent='';return;}
  const error=tr.querySelector('.error'),flags=[...tr.querySelectorAll('.flag')].map(f=>f.textContent);
  title.textContent=tr.cells[0].textContent+' ('+tr.cells[1].querySelector('.status').textContent+')';
  info.textContent=[error?error.title:'',flags.length?'flags: '+flags.join(', '):''].filter(Boolean).join(' - ');
  const picture=tr.dataset.picture;
  img.hidden=!picture;link.removeAttribute('href');
  if(picture){img.src=picture;img.alt='picture of '+tr.cells[0].textContent;link.href=picture;}
  else img.removeAttribute('src');  // a failed case has none: never the last case's picture under its name
}
function choose(tr){
  if(selected)selected.classList.remove('selected');
  selected=tr;if(!tr){show(null);save();return;}
  tr.classList.add('selected');show(tr);tr.scrollIntoView({block:'nearest'});save();
  const next=visible()[visible().indexOf(tr)+1];
  if(next&&next.dataset.picture)new Image().src=next.dataset.picture;  // the next picture is ready at once
}
function visible(){return [...body.rows].filter(r=>!r.hidden);}
function step(by){
  const rows=visible();if(!rows.length)return;
  const at=rows.indexOf(selected);
  choose(rows[at<0?(by>0?0:rows.length-1):Math.min(Math.max(at+by,0),rows.length-1)]);
}
[...table.tHead.rows[0].cells].forEach((th,i)=>{if(th.dataset.type)th.addEventListener('click',()=>sortBy(i,sortKey===i?-sortDir:1));});
filter.addEventListener('input',apply);
buttons.forEach(b=>b.addEventListener('click',()=>{b.setAttribute('aria-pressed',b.getAttribute('aria-pressed')==='true'?'false':'true');apply();}));
body.addEventListener('mouseover',e=>{const tr=e.target.closest('tr');if(tr&&tr.parentNode===body)show(tr);});
table.addEventListener('mouseleave',()=>show(selected));
body.addEventListener('click',e=>{const tr=e.target.closest('tr');if(tr&&!e.target.closest('a'))choose(tr);});
document.addEventListener('keydown',e=>{
  if(e.altKey||e.ctrlKey||e.metaKey||e.target.closest('input,textarea,select'))return;
  if(e.key==='j'||e.key==='ArrowDown'){step(1);e.preventDefault();}
  else if(e.key==='k'||e.key==='ArrowUp'){step(-1);e.preventDefault();}
  else if((e.key==='Enter'||e.key==='o')&&selected&&link.href){link.click();e.preventDefault();}
  else if(e.key==='Escape'){choose(null);}
});
const state=new URLSearchParams(location.hash.slice(1));
if(state.get('q'))filter.value=state.get('q');
(state.get('flags')||'').split(',').forEach(f=>buttons.filter(b=>b.dataset.flag===f).forEach(b=>b.setAttribute('aria-pressed','true')));
const s=(state.get('sort')||'').split(':');
if(s.length===2&&table.tHead.rows[0].cells[+s[0]])sortBy(+s[0],+s[1]>0?1:-1);else apply();
const chosen=[...body.rows].find(r=>r.dataset.index===state.get('case'));
if(chosen)choose(chosen);else show(null);
})();
"""

KEYS = ("<kbd>j</kbd>/<kbd>&darr;</kbd> next case, <kbd>k</kbd>/<kbd>&uarr;</kbd> previous, <kbd>Enter</kbd> its "
        "picture alone, <kbd>Esc</kbd> none; hover or click a row to see its picture")
PREVIEW = ('<aside id="preview"><div id="preview-title"></div><a id="preview-link" target="_blank">'
           '<img id="preview-img" alt="" hidden></a><div id="preview-info"></div></aside>')
