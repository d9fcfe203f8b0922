package caddymodule

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// decodeBody reads one JSON object into v, strictly. The body is read
// whole first, so that its size is judged before its content: over
// maxBodyBytes is 413, however it starts. Then it is decoded by
// go-json-experiment/json (the proposed encoding/json/v2), whose defaults
// already refuse what encoding/json lets through: invalid UTF-8 and lone
// surrogate escapes (v1 turns them into U+FFFD silently), a key that is
// not exactly a field's name (v1 also takes "User" or "uſer" for
// "user"), a key given twice (v1 takes the last), and data after the
// object. RejectUnknownMembers refuses unknown fields. What it lacks is
// added here: an empty body and a byte order mark get their own message,
// and a null anywhere is refused (refuseNull). Each problem is a 400
// naming the field and the byte offset (bodyError).
//
// Duplicate keys are refused, although Caddy's own admin API takes the
// last one: a proxy, log or review tool that reads the first would see
// another request than the one applied, e.g. another owner for the
// token. Nulls are refused because in a PATCH they would read as "leave
// unchanged" to the decoder and as "clear" to many clients: omit a field
// to leave it, give [] or "" to clear it.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return bodyError(err)
	}
	if len(bytes.TrimLeft(body, " \t\r\n")) == 0 {
		return badRequest(errors.New("request body is empty: a JSON object is required"))
	}
	if bytes.HasPrefix(body, []byte("\xef\xbb\xbf")) {
		return badRequest(errors.New("request body starts with a UTF-8 byte order mark: send the JSON without it"))
	}
	if err := jsonv2.Unmarshal(body, v, jsonv2.RejectUnknownMembers(true), refuseNull); err != nil {
		return bodyError(err)
	}
	return nil
}

// errNull is the error refuseNull reports for a JSON null.
var errNull = errors.New("null is not allowed")

// refuseNull makes the decoder refuse a JSON null wherever it appears
// (the library would store a zero value); every other value is left to
// the default decoding.
var refuseNull = jsonv2.WithUnmarshalers(jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, _ any) error {
	if dec.PeekKind() == 'n' {
		return errNull
	}
	return errors.ErrUnsupported
}))

// jsonKinds names the kinds of JSON value.
var jsonKinds = map[jsontext.Kind]string{
	'n': "null", 'f': "boolean", 't': "boolean", '"': "string", '0': "number", '{': "object", '[': "array",
}

// checkDescription refuses control characters in a description, but for
// tab and line breaks: the CLI prints descriptions to a terminal, where an
// escape sequence would be obeyed.
func checkDescription(desc string) error {
	for _, r := range desc {
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
			return badRequest(fmt.Errorf("description must not contain control characters other than tab and line breaks (found %U)", r))
		}
	}
	return nil
}

// decodeEmptyBody accepts an empty body or an empty JSON object.
func decodeEmptyBody(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return bodyError(err)
	}
	if s := strings.TrimSpace(string(b)); s != "" && s != "{}" {
		return badRequest(errors.New("this call takes no request body"))
	}
	return nil
}

// bodyError turns an error reading or decoding a body into a 400 (or 413)
// naming what is wrong and where: the field (the first token of the
// error's JSON pointer, with the full pointer if the problem is deeper)
// and the byte offset.
func bodyError(err error) error {
	var maxErr *http.MaxBytesError
	var semErr *jsonv2.SemanticError
	var synErr *jsontext.SyntacticError
	switch {
	case errors.As(err, &maxErr):
		return caddy.APIError{HTTPStatus: http.StatusRequestEntityTooLarge,
			Err: fmt.Errorf("request body larger than %d bytes", maxErr.Limit)}
	case errors.As(err, &semErr):
		field := jsonField(semErr.JSONPointer)
		switch {
		case semErr.Err == jsonv2.ErrUnknownName:
			return badRequest(fmt.Errorf("unknown field %.64q", semErr.JSONPointer.LastToken()))
		case semErr.JSONPointer == "" && semErr.Err == errNull:
			return badRequest(errors.New("request body must be a JSON object, got null"))
		case semErr.JSONPointer == "":
			return badRequest(fmt.Errorf("request body must be a JSON object, got %s", article(jsonKinds[semErr.JSONKind])))
		case semErr.Err == errNull:
			return badRequest(fmt.Errorf("field %s: null is not allowed (omit the field to leave it unset, or give [] or \"\" to clear it)", field))
		case semErr.GoType != nil && semErr.Err == nil:
			return badRequest(fmt.Errorf("field %s: expected %s, got JSON %s", field, semErr.GoType, jsonKinds[semErr.JSONKind]))
		}
		return badRequest(fmt.Errorf("field %s: %v", field, semErr.Err))
	case errors.As(err, &synErr):
		switch {
		case synErr.Err == jsontext.ErrDuplicateName:
			return badRequest(fmt.Errorf("duplicate key %.64q: give each field once", synErr.JSONPointer.LastToken()))
		case errors.Is(synErr.Err, io.ErrUnexpectedEOF):
			return badRequest(errors.New("malformed JSON: unexpected end of input"))
		case synErr.JSONPointer != "":
			return badRequest(fmt.Errorf("malformed JSON in field %s: %v (at byte %d)", jsonField(synErr.JSONPointer), synErr.Err, synErr.ByteOffset))
		}
		return badRequest(fmt.Errorf("malformed JSON at byte %d: %v", synErr.ByteOffset, synErr.Err))
	}
	return badRequest(fmt.Errorf("malformed JSON: %v", err))
}

// jsonField names the top-level field a JSON pointer is in, quoted, with
// the whole pointer (cut to 64 bytes) when it points deeper.
func jsonField(p jsontext.Pointer) string {
	top, rest := "", ""
	for tok := range p.Tokens() {
		if top == "" {
			top = tok
		} else {
			rest = string(p)
			break
		}
	}
	if rest == "" {
		return fmt.Sprintf("%.64q", top)
	}
	return fmt.Sprintf("%.64q (at %.64q)", top, rest)
}

// article puts "a" or "an" before a noun.
func article(noun string) string {
	if noun == "null" {
		return noun
	}
	if strings.ContainsRune("aeiou", rune(noun[0])) {
		return "an " + noun
	}
	return "a " + noun
}

// queryValues parses the request's query string, refusing one that does
// not parse: r.URL.Query() drops a pair it can't decode (a bad %-escape, a
// semicolon) without a word, which would quietly widen the filter the
// caller asked for.
func queryValues(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest(fmt.Errorf("malformed query string: %v", err))
	}
	return q, nil
}
